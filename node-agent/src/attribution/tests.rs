use std::{collections::BTreeMap, sync::Arc, time::Duration};

use node_agent_common::CgroupCounters;
use proptest::prelude::*;

use super::{split::tests::policy, *};
use crate::{
    kernel::{CgroupSample, CpuTime, PmuCounters},
    power::{SourceKind, ZoneSample},
    workload::Workload,
};

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub(super) fn counters(
    at_s: u64,
    cgroups: &[(u64, &str, u64, bool)],
    busy_ns: u64,
) -> CountersSnapshot {
    CountersSnapshot {
        at: Duration::from_secs(at_s),
        cgroups: cgroups
            .iter()
            .map(|(id, path, cpu, gone)| {
                (
                    *id,
                    CgroupSample {
                        path: Some(Arc::from(*path)),
                        counters: CgroupCounters {
                            cpu_ns: *cpu,
                            ..Default::default()
                        },
                        gone: *gone,
                    },
                )
            })
            .collect(),
        cpus: vec![CpuTime {
            busy_ns,
            idle_ns: at_s * 1_000_000_000 - busy_ns.min(at_s * 1_000_000_000),
        }],
        cpus_at: Duration::from_secs(at_s),
        overflow: CgroupCounters::default(),
        map_entries: 0,
        map_capacity: 16,
        pmu: PmuCounters::None,
        map_deletions: 0,
        processes: Default::default(),
        cpu_info: Arc::new([]),
    }
}

fn power(at_s: u64, joules: f64) -> PowerSnapshot {
    PowerSnapshot {
        source: SourceKind::Powercap,
        estimated: false,
        model_family: None,
        at_unix: at_s as f64,
        at: Duration::from_secs(at_s),
        zones: vec![ZoneSample {
            zone: "package".into(),
            joules,
            watts: None,
            path: None,
        }],
        dropped: BTreeMap::new(),
        errors: 0,
    }
}

fn joules_of(s: &AttributionSnapshot, name: &str) -> f64 {
    s.workloads
        .iter()
        .find(|w| match &w.workload {
            Workload::Cgroup(p) => &**p == name,
            Workload::Container(c) => &*c.id == name,
            Workload::Vm(v) => &*v.name == name,
        })
        .map_or(0.0, |w| w.joules[0])
}

#[test]
fn three_to_one_with_a_configured_idle() {
    let mut a = Attributor::new(AttributionOptions {
        configured_idle: vec![("package".into(), 40.0)],
        ..AttributionOptions::default()
    });
    let pods = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6f1c3a2e_8a55_4b3e_9a4e_2d0f4c1b7e21.slice/cri-containerd-{ID}.scope"
    );
    a.update(
        &counters(1, &[(1, "/", 0, false), (2, &pods, 0, false)], 0),
        Some(&power(1, 0.0)),
        &[],
        0,
        None,
    );
    // 10 s at 100 W: 400 J idle, 600 J active; the container ran 3 s, the root cgroup 1 s.
    let s = a.update(
        &counters(
            11,
            &[
                (1, "/", 1_000_000_000, false),
                (2, &pods, 3_000_000_000, false),
            ],
            4_000_000_000,
        ),
        Some(&power(11, 1000.0)),
        &[],
        0,
        None,
    );
    assert_eq!(s.node[0].idle_joules, 400.0);
    assert_eq!(s.node[0].active_joules, 600.0);
    assert_eq!(
        s.node[0].idle_estimate,
        Some((40.0, IdleMethod::Configured))
    );
    assert_eq!(joules_of(&s, ID), 450.0);
    assert_eq!(joules_of(&s, "/"), 150.0);
    assert_eq!(s.node[0].active_watts, Some(60.0));
    let c = s
        .workloads
        .iter()
        .find(|w| matches!(w.workload, Workload::Container(_)))
        .unwrap();
    assert_eq!(c.watts[0], Some(45.0));
    assert_eq!(c.counters.cpu_ns, 3_000_000_000);
}

#[test]
fn a_restarted_cgroup_adds_to_its_workload_which_never_goes_back_and_stopped_workloads_expire() {
    let mut a = Attributor::new(AttributionOptions {
        retention: Duration::from_secs(5),
        ..AttributionOptions::default()
    });
    a.update(
        &counters(1, &[(1, "/a/b", 100, false)], 100),
        Some(&power(1, 0.0)),
        &[],
        0,
        None,
    );
    // Id 1 is removed (the kernel still reports its final 100 ns); id 2 is the path re-created,
    // with its own 50 ns.
    let s = a.update(
        &counters(2, &[(1, "/a/b", 100, true), (2, "/a/b", 50, false)], 150),
        Some(&power(2, 10.0)),
        &[],
        0,
        None,
    );
    assert_eq!(s.workloads.len(), 1, "one workload: the path");
    assert_eq!(
        s.workloads[0].counters.cpu_ns, 150,
        "100 from id 1, 50 from id 2"
    );
    assert!(s.workloads[0].running);
    let joules = s.workloads[0].joules[0];
    // The kernel forgets id 1: the workload keeps what it counted.
    let s = a.update(
        &counters(3, &[(2, "/a/b", 60, false)], 160),
        Some(&power(3, 20.0)),
        &[],
        0,
        None,
    );
    assert_eq!(
        s.workloads[0].counters.cpu_ns, 160,
        "never back to id 2's 60"
    );
    assert!(s.workloads[0].joules[0] > joules);
    // The workload stops; after the retention its series go.
    let s = a.update(&counters(4, &[], 160), Some(&power(4, 30.0)), &[], 0, None);
    assert!(!s.workloads[0].running);
    assert_eq!(s.workloads[0].counters.cpu_ns, 160);
    let s = a.update(&counters(7, &[], 160), Some(&power(7, 40.0)), &[], 0, None);
    assert_eq!(s.workloads.len(), 1, "4 s after it was last reported");
    let s = a.update(&counters(8, &[], 160), Some(&power(8, 50.0)), &[], 0, None);
    assert!(s.workloads.is_empty());
    assert_eq!(s.node[0].active_joules + s.node[0].idle_joules, 50.0);
    assert_eq!(s.expired_joules[0], s.node[0].active_joules);
}

#[test]
fn beyond_the_bound_the_longest_stopped_expire_first_and_running_ones_stay() {
    let mut a = Attributor::new(AttributionOptions {
        max_workloads: 2,
        ..AttributionOptions::default()
    });
    a.update(
        &counters(1, &[(1, "/a", 10, false), (2, "/b", 10, false)], 20),
        None,
        &[],
        0,
        None,
    );
    // /a stops (it leaves the snapshot): two workloads, within the bound.
    let s = a.update(
        &counters(2, &[(2, "/b", 10, false)], 20),
        None,
        &[],
        0,
        None,
    );
    assert_eq!(s.workloads.len(), 2);
    // /b stops too (removed: reported as gone) and /c starts: one too many, /a goes first.
    let s = a.update(
        &counters(3, &[(2, "/b", 10, true), (3, "/c", 10, false)], 30),
        None,
        &[],
        0,
        None,
    );
    assert_eq!(cpu_of(&s, "/a"), None, "the longest-stopped went");
    assert_eq!(cpu_of(&s, "/b"), Some(10));
    assert_eq!(s.workloads.len(), 2);
    // Over the bound with running workloads: they all stay; the stopped one goes.
    let rows = [
        (3, "/c", 20, false),
        (4, "/d", 5, false),
        (5, "/e", 5, false),
    ];
    let s = a.update(&counters(4, &rows, 60), None, &[], 0, None);
    assert_eq!(cpu_of(&s, "/b"), None);
    assert_eq!(s.workloads.len(), 3, "running workloads never expire");
}

fn cpu_of(s: &AttributionSnapshot, path: &str) -> Option<u64> {
    s.workloads
        .iter()
        .find(|w| matches!(&w.workload, Workload::Cgroup(p) if &**p == path))
        .map(|w| w.counters.cpu_ns)
}

#[test]
fn a_removed_cgroup_still_reported_by_the_kernel_does_not_expire() {
    let mut a = Attributor::new(AttributionOptions {
        retention: Duration::from_secs(5),
        ..AttributionOptions::default()
    });
    a.update(
        &counters(1, &[(1, "/gone", 100, false)], 100),
        Some(&power(1, 0.0)),
        &[],
        0,
        None,
    );
    // Removed at 2 s; the kernel keeps reporting its final totals until 20 s.
    for t in 2..20 {
        let s = a.update(
            &counters(t, &[(1, "/gone", 200, true)], 200),
            Some(&power(t, t as f64)),
            &[],
            0,
            None,
        );
        assert_eq!(s.workloads[0].counters.cpu_ns, 200, "at {t} s");
        assert!(!s.workloads[0].running);
    }
    // Then it leaves the snapshot; after the retention it goes, and its energy is kept apart.
    let s = a.update(
        &counters(30, &[], 200),
        Some(&power(30, 30.0)),
        &[],
        0,
        None,
    );
    assert!(s.workloads.is_empty());
    assert_eq!(s.expired_joules[0], s.node[0].active_joules);
}

#[test]
fn a_pod_keeps_the_energy_of_its_expired_containers() {
    let mut a = Attributor::new(AttributionOptions {
        retention: Duration::from_secs(5),
        ..AttributionOptions::default()
    });
    let pod = "/kubepods.slice/kubepods-pod6f1c3a2e_8a55_4b3e_9a4e_2d0f4c1b7e21.slice";
    let init = format!("{pod}/cri-containerd-{}.scope", "1".repeat(64));
    let app = format!("{pod}/cri-containerd-{}.scope", "2".repeat(64));
    a.update(
        &counters(1, &[(1, &init, 0, false)], 0),
        Some(&power(1, 0.0)),
        &[],
        0,
        None,
    );
    a.update(
        &counters(2, &[(1, &init, 100, true), (2, &app, 0, false)], 100),
        Some(&power(2, 10.0)),
        &[],
        0,
        None,
    );
    let mut pod_joules = 0.0;
    for t in 3..20u64 {
        let s = a.update(
            &counters(t, &[(2, &app, 100 * t, false)], 100 * t),
            Some(&power(t, 10.0 * t as f64)),
            &[],
            0,
            None,
        );
        let p = s.pods[0].joules[0];
        assert!(
            p >= pod_joules,
            "pod energy went back at {t} s: {pod_joules} → {p}"
        );
        pod_joules = p;
        if t > 10 {
            assert_eq!(s.workloads.len(), 1, "the init container expired");
        }
    }
}

#[test]
fn the_model_idle_is_used_and_the_regression_finds_the_intercept() {
    let mut a = Attributor::new(AttributionOptions::default());
    a.update(
        &counters(1, &[(1, "/x", 0, false)], 0),
        Some(&power(1, 0.0)),
        &[("package".into(), 7.0)],
        0,
        None,
    );
    let s = a.update(
        &counters(2, &[(1, "/x", 1, false)], 1),
        Some(&power(2, 10.0)),
        &[("package".into(), 7.0)],
        0,
        None,
    );
    assert_eq!(s.node[0].idle_estimate, Some((7.0, IdleMethod::Model)));

    // Measured: 40 W + 60 W × busy, busy going 0, 0.1, …, 0.9 over twenty 1 s intervals.
    let mut a = Attributor::new(AttributionOptions::default());
    let (mut busy, mut joules, mut cpu) = (0u64, 0.0, 0u64);
    let mut last = None;
    for t in 1..=21u64 {
        let ratio = (t % 10) as f64 / 10.0;
        let mut z = power(t, joules);
        z.zones[0].watts = (t > 1).then_some(40.0 + 60.0 * ratio);
        let s = a.update(
            &counters(t, &[(1, "/x", cpu, false)], busy),
            Some(&z),
            &[],
            0,
            None,
        );
        last = Some(s);
        let d = (ratio * 1e9) as u64;
        busy += d;
        cpu += d;
        joules += 40.0 + 60.0 * ((t + 1) % 10) as f64 / 10.0;
    }
    let (w, method) = last.unwrap().node[0].idle_estimate.unwrap();
    assert_eq!(method, IdleMethod::Regression);
    assert!((w - 40.0).abs() < 8.0, "{w}");
}

/// One random interval: which of a fixed set of cgroups exist, how much each ran, whether its
/// counter restarted, the node's energy, and the grid intensity in force (and its source).
#[derive(Clone, Debug)]
struct Step {
    present: Vec<(bool, bool, u64, bool)>,
    joules: f64,
    intensity: (f64, crate::carbon::SourceKind),
}

fn source() -> impl Strategy<Value = crate::carbon::SourceKind> {
    use crate::carbon::SourceKind::*;
    prop_oneof![Just(Api), Just(File), Just(Default)]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(
                (
                    any::<bool>(),
                    any::<bool>(),
                    0u64..2_000_000_000,
                    prop::bool::weighted(0.05),
                ),
                6,
            ),
            0.0f64..500.0,
            (0.0f64..2000.0, source()),
        )
            .prop_map(|(present, joules, intensity)| Step {
                present,
                joules,
                intensity,
            }),
        2..40,
    )
}

/// The carbon figures of one step.
fn in_force(step: &Step, pue: f64, embodied: f64) -> IntervalCarbon {
    IntervalCarbon {
        reading: crate::carbon::Reading {
            grams_per_kwh: step.intensity.0,
            source: step.intensity.1,
            zone: None,
            is_estimated: None,
            fetched_at: std::time::Instant::now(),
            datetime: None,
        },
        pue,
        embodied_grams_per_second: Some(embodied),
    }
}

type Checked = Result<(), TestCaseError>;

/// Runs `a` over `steps`, one second apart: cgroups that appear, disappear, stop and restart
/// their counters. `check` sees every snapshot; returns the last.
fn drive(
    a: &mut Attributor,
    steps: &[Step],
    carbon: (f64, f64),
    mut check: impl FnMut(&AttributionSnapshot) -> Checked,
) -> Result<AttributionSnapshot, TestCaseError> {
    let paths = [
        "/".to_owned(),
        "/system.slice/a.service".to_owned(),
        "/system.slice/a.service/child".to_owned(),
        format!(
            "/kubepods.slice/kubepods-pod6f1c3a2e_8a55_4b3e_9a4e_2d0f4c1b7e21.slice/cri-containerd-{ID}.scope"
        ),
        format!("/docker/{}", ID.replace('0', "f")),
        "/user.slice".to_owned(),
    ];
    let mut own = [0u64; 6];
    // A removed cgroup never comes back: a new one gets a new id.
    let mut incarnation = [0u64; 6];
    let (mut total_joules, mut busy) = (0.0, 0u64);
    let mut last = None;
    for (t, step) in steps.iter().enumerate() {
        let mut c = counters(t as u64 + 1, &[], 0);
        for (i, (exists, gone, ran, reset)) in step.present.iter().enumerate() {
            if *reset {
                own[i] = 0; // a counter that restarts from zero
            }
            if !*exists {
                incarnation[i] += 1;
                own[i] = 0;
                continue;
            }
            own[i] += ran;
            busy += ran;
            c.cgroups.insert(
                (i as u64) * 1000 + incarnation[i],
                CgroupSample {
                    path: Some(Arc::from(paths[i].as_str())),
                    counters: CgroupCounters {
                        cpu_ns: own[i],
                        ..Default::default()
                    },
                    gone: *gone,
                },
            );
        }
        c.cpus = counters(t as u64 + 1, &[], busy).cpus;
        if t > 0 {
            total_joules += step.joules;
        }
        let carbon = in_force(step, carbon.0, carbon.1);
        let s = a.update(
            &c,
            Some(&power(t as u64 + 1, total_joules)),
            &[],
            0,
            Some(&carbon),
        );
        check(&s)?;
        last = Some(s);
    }
    Ok(last.expect("at least one step"))
}

/// Series that only go up: each key's value never goes down while the key is present (a key
/// that went away may come back later, from zero: a new series).
#[derive(Default)]
struct Monotonic(BTreeMap<String, f64>);

impl Monotonic {
    fn check(&mut self, values: impl IntoIterator<Item = (String, f64)>) -> Checked {
        let mut now = BTreeMap::new();
        for (key, v) in values {
            if let Some(before) = self.0.get(&key) {
                prop_assert!(
                    v >= before - 1e-9 * before.abs(),
                    "{key} went down: {before} → {v}"
                );
            }
            now.insert(key, v);
        }
        self.0 = now;
        Ok(())
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

fn operational_grams(e: &Emissions) -> f64 {
    e.operational.iter().map(|s| s.grams[0]).sum()
}

proptest! {
    /// Cumulatively, over any sequence of intervals with cgroups that appear, disappear, stop
    /// and restart their counters: Σ workloads + what the node kept = node total = Σ zone
    /// energy, to 1e-9; and no workload's counter ever goes down.
    #[test]
    fn conservation_over_intervals(
        steps in steps(),
        p in policy(),
        idle_w in 0.0f64..100.0,
        retention_s in 1u64..10,
        max_workloads in 1usize..8,
    ) {
        let mut a = Attributor::new(AttributionOptions {
            idle_policy: p,
            configured_idle: vec![("package".into(), idle_w)],
            retention: Duration::from_secs(retention_s),
            max_workloads,
            ..AttributionOptions::default()
        });
        let mut series = Monotonic::default();
        let s = drive(&mut a, &steps, (1.0, 0.0), |s| {
            let workloads = s.workloads.iter().flat_map(|w| {
                let key = format!("{:?}", w.workload);
                [(format!("{key} J"), w.joules[0]), (format!("{key} cpu"), w.counters.cpu_ns as f64)]
            });
            let pods = s.pods.iter().map(|p| (format!("pod {}", p.uid), p.joules[0]));
            series.check(workloads.chain(pods))
        })?;
        let total_joules: f64 = steps.iter().skip(1).map(|s| s.joules).sum();
        let node = &s.node[0];
        let workloads: f64 = s.workloads.iter().map(|w| w.joules[0]).sum();
        let expired = s.expired_joules[0];
        let tol = 1e-9 * total_joules.max(1.0);
        prop_assert!((node.active_joules + node.idle_joules - total_joules).abs() <= tol);
        prop_assert!((workloads + expired + node.kept_joules - total_joules).abs() <= tol,
            "{workloads} + {expired} + {} vs {total_joules}", node.kept_joules);
        prop_assert!(s.workloads.len() <= max_workloads.max(6), "bounded");
    }

    /// The same for grams, with an intensity (and its source) that changes at every interval:
    /// the node's operational grams are Σ energy_i × intensity_i × PUE, and Σ workloads + kept
    /// by the node + expired = node, summed over sources, to 1e-9; embodied grams likewise
    /// (Σ workloads + the capacity nobody used + expired = seconds × g/s). No workload's or
    /// pod's grams under any source ever go down.
    #[test]
    fn grams_conserved_over_intervals(
        steps in steps(),
        p in policy(),
        idle_w in 0.0f64..100.0,
        retention_s in 1u64..10,
        max_workloads in 1usize..8,
        pue in 1.0f64..2.0,
        embodied in 0.0f64..0.1,
    ) {
        let mut a = Attributor::new(AttributionOptions {
            idle_policy: p,
            configured_idle: vec![("package".into(), idle_w)],
            retention: Duration::from_secs(retention_s),
            max_workloads,
            ..AttributionOptions::default()
        });
        let mut series = Monotonic::default();
        let s = drive(&mut a, &steps, (pue, embodied), |s| {
            let grams = |key: String, e: &Emissions| {
                let embodied = (format!("{key} embodied"), e.embodied);
                e.operational.iter()
                    .map(move |g| (format!("{key} {:?}", g.source), g.grams[0]))
                    .chain([embodied])
                    .collect::<Vec<_>>()
            };
            let workloads = s.workloads.iter().flat_map(|w| grams(format!("{:?}", w.workload), &w.emissions));
            let pods = s.pods.iter().flat_map(|p| grams(format!("pod {}", p.uid), &p.emissions));
            series.check(workloads.chain(pods))
        })?;
        let want: f64 = steps.iter().skip(1)
            .map(|s| s.joules * s.intensity.0 * pue / crate::carbon::emissions::JOULES_PER_KWH)
            .sum();
        let node: f64 = s.node[0].emissions.iter().map(|g| g.active + g.idle).sum();
        let kept: f64 = s.node[0].emissions.iter().map(|g| g.kept).sum();
        let workloads: f64 = s.workloads.iter().map(|w| operational_grams(&w.emissions)).sum();
        let c = s.carbon.as_ref().expect("carbon was given");
        let expired = operational_grams(&c.expired);
        prop_assert!(close(node, want), "node {node} vs Σ E_i × I_i × PUE {want}");
        prop_assert!(close(workloads + kept + expired, node),
            "{workloads} + {kept} + {expired} vs {node}");

        let want = (steps.len() - 1) as f64 * embodied;
        let workloads: f64 = s.workloads.iter().map(|w| w.emissions.embodied).sum();
        prop_assert!(close(c.embodied_active + c.embodied_idle, want));
        prop_assert!(close(workloads + c.embodied_idle + c.expired.embodied, want),
            "{workloads} + {} + {} vs {want}", c.embodied_idle, c.expired.embodied);
    }
}

/// One interval of the platform test: package, dram and the platform meter's joules, and
/// whether the meter was stale (no energy, no power).
#[derive(Clone, Debug)]
struct Meters {
    package: f64,
    dram: f64,
    platform: f64,
    stale: bool,
}

fn meters() -> impl Strategy<Value = Vec<Meters>> {
    let one = (
        0.0f64..300.0,
        0.0f64..50.0,
        0.0f64..900.0,
        prop::bool::weighted(0.2),
    );
    proptest::collection::vec(one, 40).prop_map(|v| {
        (v.into_iter())
            .map(|(package, dram, platform, stale)| Meters {
                package,
                dram,
                platform,
                stale,
            })
            .collect()
    })
}

/// The three zones at `at_s`, cumulative; the platform without power while stale.
fn platform_power(at_s: u64, totals: [f64; 3], stale: bool) -> PowerSnapshot {
    let mut p = power(at_s, totals[1]);
    let zone = |zone: &str, joules: f64, watts: Option<f64>| ZoneSample {
        zone: zone.into(),
        joules,
        watts,
        path: None,
    };
    p.zones = vec![
        zone("dram", totals[0], Some(1.0)),
        zone("package", totals[1], Some(1.0)),
        zone("platform", totals[2], (!stale).then_some(1.0)),
    ];
    p
}

/// Each workload's joules per zone, by its debug name.
fn per_workload(s: &AttributionSnapshot) -> BTreeMap<String, Vec<f64>> {
    (s.workloads.iter())
        .map(|w| (format!("{:?}", w.workload), w.joules.clone()))
        .collect()
}

proptest! {
    /// The platform over intervals with stale gaps, a meter below the CPU zones, and cgroups
    /// that come and go: Σ workloads' platform + kept + expired = the node's platform = the
    /// meter's joules, to 1e-9; in each interval where the meter read at least package + dram,
    /// every workload's platform share is at least its package + dram share; a stale interval
    /// shows no platform power; the CPU zones' excess is what the meter read below them.
    #[test]
    fn the_platform_is_conserved_and_holds_the_cpu_shares(
        steps in steps(),
        meters in meters(),
        p in policy(),
        platform_idle in prop::option::of(0.0f64..300.0),
        retention_s in 1u64..10,
    ) {
        let mut configured = vec![("package".to_owned(), 20.0)];
        configured.extend(platform_idle.map(|w| ("platform".to_owned(), w)));
        let mut a = Attributor::new(AttributionOptions {
            idle_policy: p,
            configured_idle: configured,
            retention: Duration::from_secs(retention_s),
            max_workloads: 4,
            ..AttributionOptions::default()
        });
        let (mut totals, mut excess) = ([0.0f64; 3], 0.0);
        let mut before: Option<AttributionSnapshot> = None;
        let mut series = Monotonic::default();
        for (t, (step, m)) in steps.iter().zip(&meters).enumerate() {
            if t > 0 {
                totals[0] += m.dram;
                totals[1] += m.package;
                if !m.stale {
                    totals[2] += m.platform;
                    excess += (m.package + m.dram - m.platform).max(0.0);
                }
            }
            let c = drive_counters(t, step, &steps[..t]);
            let s = a.update(&c, Some(&platform_power(t as u64 + 1, totals, m.stale)), &[], 0, None);
            prop_assert_eq!(&s.zones, &["dram", "package", "platform"]);
            series.check(per_workload(&s).into_iter().map(|(k, j)| (k, j[2])))?;
            if t > 0 && m.stale {
                prop_assert_eq!(s.node[2].active_watts, None, "no platform power while stale");
            }
            if let Some(b) = before.filter(|_| t > 0 && !m.stale && m.platform >= m.package + m.dram) {
                let (then, now) = (per_workload(&b), per_workload(&s));
                for (w, j) in &now {
                    let j0 = then.get(w).cloned().unwrap_or_else(|| vec![0.0; 3]);
                    let cpu = (j[0] - j0[0]) + (j[1] - j0[1]);
                    prop_assert!(j[2] - j0[2] >= cpu - 1e-9 * j[2].max(1.0),
                        "{w}: platform {} < package + dram {cpu}", j[2] - j0[2]);
                }
            }
            let node = &s.node[2];
            let workloads: f64 = s.workloads.iter().map(|w| w.joules[2]).sum();
            let tol = 1e-9 * totals[2].max(1.0);
            prop_assert!((node.active_joules + node.idle_joules - totals[2]).abs() <= tol);
            prop_assert!((workloads + s.expired_joules[2] + node.kept_joules - totals[2]).abs() <= tol,
                "{workloads} + {} + {} vs {}", s.expired_joules[2], node.kept_joules, totals[2]);
            let pt = a.platform().unwrap_or_default();
            prop_assert!((pt.cpu_excess_joules - excess).abs() <= 1e-9 * excess.max(1.0));
            before = Some(s);
        }
    }
}

/// The kernel counters of step `t` of [`drive`]'s cgroups, recomputed from the steps before it.
fn drive_counters(t: usize, step: &Step, earlier: &[Step]) -> CountersSnapshot {
    let paths = [
        "/".to_owned(),
        "/system.slice/a.service".to_owned(),
        format!(
            "/kubepods.slice/kubepods-pod6f1c3a2e_8a55_4b3e_9a4e_2d0f4c1b7e21.slice/cri-containerd-{ID}.scope"
        ),
        "/user.slice".to_owned(),
        format!("/docker/{}", ID.replace('0', "f")),
        "/system.slice/b.service".to_owned(),
    ];
    let mut c = counters(t as u64 + 1, &[], 0);
    let mut busy = 0;
    for (i, path) in paths.iter().enumerate() {
        // Cumulative CPU time since the cgroup's last (re)creation; a missing step removes it.
        let mut own = 0u64;
        let mut incarnation = 0u64;
        for s in earlier.iter().chain([step]) {
            let (exists, _, ran, _) = s.present[i];
            if exists {
                own += ran;
                busy += ran;
            } else {
                own = 0;
                incarnation += 1;
            }
        }
        let (exists, gone, _, _) = step.present[i];
        if exists {
            c.cgroups.insert(
                i as u64 * 1000 + incarnation,
                CgroupSample {
                    path: Some(Arc::from(path.as_str())),
                    counters: CgroupCounters {
                        cpu_ns: own,
                        ..Default::default()
                    },
                    gone,
                },
            );
        }
    }
    c.cpus = counters(t as u64 + 1, &[], busy).cpus;
    c
}
