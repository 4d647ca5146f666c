//! A kernel map reset under the agent: a busy cgroup's entry deleted from the in-kernel map from
//! outside (as `bpftool map delete` would) while the agent reads it. The program creates the
//! entry again at its next charge, the cgroup's counts start again from there, and what
//! attribution exports never goes back nor jumps. Run as root through `cargo xtask test`.

use std::{collections::BTreeMap, thread, time::Duration};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Map, MapData, PerCpuHashMap, loaded_maps};
use integration_tests::{TestCgroup, cgroup2_root, require_root, wait_all};
use node_agent::{
    attribution::{AttributionOptions, Attributor},
    cgroup::CgroupTree,
    kernel::{KernelCounters, KernelOptions, PmuMode},
    power::{PowerSnapshot, SourceKind, ZoneSample},
    workload::Workload,
};
use node_agent_common::{CgroupCounters, names};

/// The ids of the loaded maps named like the agent's cgroup map.
fn cgroup_maps() -> Vec<u32> {
    loaded_maps()
        .filter_map(|m| m.ok())
        .filter(|m| m.name_as_str() == Some(names::CGROUPS))
        .map(|m| m.id())
        .collect()
}

/// A reading of a steady 40 W package, so that every interval has energy to share.
fn power(at: Duration) -> PowerSnapshot {
    PowerSnapshot {
        source: SourceKind::Powercap,
        estimated: false,
        model_family: None,
        at_unix: 0.0,
        at,
        zones: vec![ZoneSample {
            zone: "package".into(),
            joules: at.as_secs_f64() * 40.0,
            watts: None,
            path: None,
        }],
        dropped: BTreeMap::new(),
        errors: 0,
    }
}

#[test]
fn deleting_map_entries_under_the_agent_never_makes_exports_go_back() -> Result<()> {
    require_root();
    let before = cgroup_maps();
    let mut counters = KernelCounters::load(KernelOptions {
        pmu: PmuMode::Off,
        ..KernelOptions::default()
    })?;
    // Ours is the one map that was not there before the load (other agents may be running).
    let ours: Vec<u32> = (cgroup_maps().into_iter())
        .filter(|id| !before.contains(id))
        .collect();
    let [id] = ours[..] else {
        bail!("expected one new {} map, found {ours:?}", names::CGROUPS);
    };
    let mut map: PerCpuHashMap<MapData, u64, CgroupCounters> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(MapData::from_id(id)?))?;
    let mut tree = CgroupTree::new(cgroup2_root()?);
    let mut attributor = Attributor::new(AttributionOptions::default());

    let cg = TestCgroup::new("map-reset")?;
    let path = format!("/{}", cg.path.strip_prefix(cgroup2_root()?)?.display());
    // One spinner more than there are CPUs, so that they are switched (and charged) at every
    // scheduler slice: a lone spinner on a quiet CPU is charged only when something else
    // runs, in lumps the deletions can cut into.
    let cpus = thread::available_parallelism().map_or(2, usize::from);
    let busy: Vec<_> = (0..=cpus)
        .map(|_| cg.spawn(integration_tests::workload!().args(["spin", "4"])))
        .collect::<Result<_, _>>()?;
    let (mut last_cpu, mut last_joules, mut deleted, mut dips) = (0u64, 0.0f64, 0, 0);
    for i in 0..14 {
        thread::sleep(Duration::from_millis(250));
        if i % 4 == 3 {
            map.remove(&cg.id).context("deleting the cgroup's entry")?;
            deleted += 1;
        }
        let s = counters.read(&mut tree)?;
        let kernel = s.cgroups.get(&cg.id).map_or(0, |c| c.counters.cpu_ns);
        let a = attributor.update(&s, Some(&power(s.at)), &[], 0, None);
        let ours = |w: &Workload| matches!(w, Workload::Cgroup(p) if **p == *path);
        let Some(w) = a.workloads.iter().find(|w| ours(&w.workload)) else {
            continue;
        };
        let (cpu, joules) = (w.counters.cpu_ns, w.joules[0]);
        println!(
            "map reset — read {i}: kernel entry {:.3}s, exported {:.3}s and {joules:.2} J",
            kernel as f64 / 1e9,
            cpu as f64 / 1e9
        );
        dips += usize::from(kernel < last_cpu);
        assert!(
            cpu >= last_cpu,
            "exported CPU time went back: {last_cpu} → {cpu}"
        );
        assert!(
            joules.is_finite() && joules >= last_joules,
            "{last_joules} → {joules} J"
        );
        let watts = w.watts[0].unwrap_or(0.0);
        assert!(
            watts.is_finite() && (0.0..=40.0 + 1e-6).contains(&watts),
            "{watts} W"
        );
        (last_cpu, last_joules) = (cpu, joules);
    }
    wait_all(busy)?;
    assert_eq!(deleted, 3);
    assert!(dips >= 1, "the kernel's count restarted after a delete");
    assert!(
        last_joules > 0.0 && last_cpu > 1_000_000_000,
        "{last_cpu} ns, {last_joules} J"
    );
    Ok(())
}
