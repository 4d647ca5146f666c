//! The golden exposition: the fixed snapshot rendered as OpenMetrics and as classic text,
//! compared byte for byte with `testdata/`, so that any change to what users scrape shows up in
//! review. Regenerate after an intended change with
//! `WATTLET_UPDATE_GOLDEN=1 cargo test -p node-agent golden`, and read the diff.

use std::{env, fs, path::PathBuf, sync::Arc};

use super::{openmetrics_to_text_004, registry, render};
use crate::{
    config::Compat,
    kernel::PmuCounters,
    snapshot::{Latest, Snapshot, fixture},
};

const REGENERATE: &str = "WATTLET_UPDATE_GOLDEN=1 cargo test -p node-agent golden";

fn rendered(s: Snapshot, compat: Option<Compat>) -> String {
    let latest = Arc::new(Latest::default());
    latest.publish(s);
    render(&registry(latest, "node-1", compat)).expect("rendering a fixed snapshot")
}

/// Compares with `testdata/<name>`, or rewrites it when asked to.
fn assert_golden(name: &str, actual: &str) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/exporter/testdata")
        .join(name);
    if env::var_os("WATTLET_UPDATE_GOLDEN").is_some() {
        fs::write(&file, actual).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        return;
    }
    let expected = fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}; create it with {REGENERATE}",
            file.display()
        )
    });
    assert!(
        expected == actual,
        "the exposition differs from {}:\n{}\nIf the change is intended, regenerate with \
         {REGENERATE} and review `git diff` of the file.",
        file.display(),
        diff_hint(&expected, actual)
    );
}

/// The first differing line, then the lines only one side has (at most 20 each).
fn diff_hint(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = match e.iter().zip(&a).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at line {}:\n  want {}\n  got  {}\n",
            i + 1,
            e[i],
            a[i]
        ),
        None => format!("{} lines wanted, {} rendered\n", e.len(), a.len()),
    };
    let only = |these: &[&str], those: &[&str], sign: &str, out: &mut String| {
        let lines: Vec<_> = these.iter().filter(|l| !those.contains(l)).collect();
        for l in lines.iter().take(20) {
            out.push_str(&format!("{sign} {l}\n"));
        }
        if lines.len() > 20 {
            out.push_str(&format!("{sign} … and {} more\n", lines.len() - 20));
        }
        lines.len()
    };
    let missing = only(&e, &a, "-", &mut out);
    let extra = only(&a, &e, "+", &mut out);
    if missing + extra == 0 {
        out.push_str("the same lines in a different order (or a different final newline)\n");
    }
    out
}

#[test]
fn golden_exposition() {
    let om = rendered(fixture::snapshot(), Some(Compat::Kepler));
    assert_golden("exposition.om.txt", &om);
    assert_golden("exposition.txt", &openmetrics_to_text_004(&om));
}

/// Rendering reads nothing that changes between scrapes (no HashMap order, no clock).
#[test]
fn golden_rendering_is_deterministic() {
    let latest = Arc::new(Latest::default());
    latest.publish(fixture::snapshot());
    let reg = registry(latest, "node-1", Some(Compat::Kepler));
    let first = render(&reg).unwrap();
    assert_eq!(first, render(&reg).unwrap());
    assert_eq!(first, rendered(fixture::snapshot(), Some(Compat::Kepler)));
}

fn is_kepler(line: &str) -> bool {
    [
        "kepler_",
        "# HELP kepler_",
        "# TYPE kepler_",
        "# UNIT kepler_",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

/// Without `--metrics-compat kepler`: the golden exposition minus Kepler's families, nothing else.
#[test]
fn golden_without_kepler_names() {
    let with: String = rendered(fixture::snapshot(), Some(Compat::Kepler))
        .lines()
        .filter(|l| !is_kepler(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let without = rendered(fixture::snapshot(), None);
    assert!(!without.lines().any(is_kepler));
    assert_eq!(without, with);
}

/// Without a PMU, cycles and instructions are not exported at all (rather than as zeros).
#[test]
fn golden_without_pmu_no_cycles_families() {
    let mut s = fixture::snapshot();
    s.counters.pmu = PmuCounters::None;
    let text = rendered(s, None);
    for family in ["_cpu_cycles", "_cpu_instructions"] {
        assert!(!text.contains(family), "{family} in\n{text}");
    }
    assert!(text.contains("wattlet_pmu_info{node=\"node-1\",counters=\"none\"} 1\n"));
}

/// Without a power reading: CPU time and workloads' counters, no node energy, no Kepler.
#[test]
fn golden_without_power_no_energy_families() {
    let mut s = fixture::snapshot();
    s.power = None;
    let text = rendered(s, Some(Compat::Kepler));
    for family in [
        "wattlet_node_energy_joules",
        "wattlet_node_power_source",
        "kepler_",
    ] {
        assert!(!text.contains(family), "{family} in\n{text}");
    }
    assert!(text.contains("# TYPE wattlet_node_cpu_seconds counter\n"));
    assert!(text.contains("# TYPE wattlet_container_cpu_seconds counter\n"));
}

/// Without a power reading: the intensity in force, no emissions (no energy to weigh).
#[test]
fn golden_without_power_intensity_but_no_emissions() {
    let mut s = fixture::snapshot();
    s.power = None;
    let text = rendered(s, None);
    assert!(text.contains("wattlet_grid_carbon_intensity_grams_per_kwh{"));
    assert!(
        !text.contains("_emissions_grams_total{node=\"node-1\",zone="),
        "{text}"
    );
}

/// Embodied families only with --carbon.embodied-kg; no carbon families without carbon.
#[test]
fn golden_carbon_families_only_when_configured() {
    let mut s = fixture::snapshot();
    if let Some(c) = &mut s.carbon {
        c.embodied_grams_per_second = None;
    }
    let text = rendered(s, None);
    assert!(text.contains("wattlet_node_emissions_grams_total{"));
    assert!(!text.contains("embodied"), "{text}");
    let mut s = fixture::snapshot();
    s.carbon = None;
    let text = rendered(s, None);
    for family in ["emissions", "carbon"] {
        assert!(!text.contains(family), "{family} in\n{text}");
    }
}

/// A stale BMC: no `kepler_platform_watts` series (as Kepler emits none without a reading), and
/// the stale gauge at 1; without a BMC, no platform families at all.
#[test]
fn golden_a_stale_platform_meter_shows_no_power() {
    let mut s = fixture::snapshot();
    if let Some(p) = &mut s.platform {
        p.meter.stale = true;
    }
    let text = rendered(s, Some(Compat::Kepler));
    assert!(text.contains("# TYPE kepler_platform_watts gauge\n"));
    assert!(!text.contains("kepler_platform_watts{"), "{text}");
    assert!(text.contains("wattlet_platform_stale{node=\"node-1\",source=\"redfish\"} 1.0\n"));
    let mut s = fixture::snapshot();
    s.platform = None;
    let text = rendered(s, Some(Compat::Kepler));
    assert!(!text.contains("platform_"), "{text}");
}

/// Before the first interval: build info only, no snapshot families.
#[test]
fn golden_nothing_before_the_first_snapshot() {
    let reg = registry(Arc::new(Latest::default()), "node-1", Some(Compat::Kepler));
    let text = render(&reg).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        [format!(
            "wattlet_build_info{{node=\"node-1\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )]
    );
}
