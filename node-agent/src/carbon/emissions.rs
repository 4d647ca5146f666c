//! Emissions, pure: grams of CO2e from one interval's joules and the intensity in force during
//! that interval (operational, SCI's E × I), and the server's amortised manufacturing
//! footprint (embodied, SCI's M). Inputs in, numbers out; property-tested for conservation
//! like the energy split.
//!
//! Integrating per interval is what makes the totals right when the intensity changes: the
//! product of the energy rate and the intensity averaged over a range is not.

use std::time::Duration;

use crate::attribution::Split;

pub const JOULES_PER_KWH: f64 = 3.6e6;

fn clean(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// Grams CO2e per joule of IT energy: intensity (g/kWh) × PUE / 3.6e6. The facility draws
/// PUE joules from the grid for each joule the servers use. A PUE below 1 (impossible) or not
/// a number counts as 1; a bad intensity as 0. Never NaN or negative.
pub fn grams_per_joule(grams_per_kwh: f64, pue: f64) -> f64 {
    let pue = if pue.is_finite() && pue >= 1.0 {
        pue
    } else {
        1.0
    };
    clean(grams_per_kwh) * pue / JOULES_PER_KWH
}

/// Grams for `joules` at `grams_per_joule`.
pub fn grams(joules: f64, grams_per_joule: f64) -> f64 {
    clean(joules) * clean(grams_per_joule)
}

/// Grams of one interval, split like its energy. Always `kept_by_node + Σ workloads = node`
/// (up to rounding).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GramsSplit {
    /// All of the interval's grams on this node (for one zone, or embodied).
    pub node: f64,
    /// The part no workload took: idle kept on the node, intervals in which nothing ran, and
    /// (embodied) the capacity no workload used.
    pub kept_by_node: f64,
    /// Per workload, in the order of the split's weights.
    pub workloads: Vec<f64>,
}

/// One zone's interval split (joules, as [`crate::attribution::split`] made it) in grams:
/// each workload's active + idle joules, and the node's kept joules, at the same factor.
pub fn operational(split: &Split, grams_per_joule: f64) -> GramsSplit {
    let g = |j: f64| grams(j, grams_per_joule);
    GramsSplit {
        node: g(split.idle) + g(split.active),
        kept_by_node: g(split.kept_by_node),
        workloads: split
            .workload_active
            .iter()
            .zip(&split.workload_idle)
            .map(|(a, i)| g(*a) + g(*i))
            .collect(),
    }
}

/// The server's manufacturing footprint amortised per second: kg × 1000 / lifetime seconds.
pub fn embodied_grams_per_second(kg: f64, lifetime: Duration) -> f64 {
    let secs = lifetime.as_secs_f64();
    if secs > 0.0 {
        clean(kg) * 1000.0 / secs
    } else {
        0.0
    }
}

/// One interval's embodied grams (`seconds` × `grams_per_second`), shared among workloads by
/// CPU time (`weights`, as active energy) out of the node's CPU `capacity` in the same unit
/// (CPU-seconds or -nanoseconds available on all CPUs in the interval): as SCI's resource
/// share, the capacity nobody used stays on the node, so an idle server's footprint is not
/// charged to the one process that woke up. A capacity of 0 (unknown) shares all of it among
/// the workloads, like active energy. When nothing ran it all stays on the node.
pub fn embodied(seconds: f64, grams_per_second: f64, weights: &[f64], capacity: f64) -> GramsSplit {
    let total = clean(seconds) * clean(grams_per_second);
    let used: f64 = weights.iter().map(|w| clean(*w)).sum();
    if used <= 0.0 {
        return GramsSplit {
            node: total,
            kept_by_node: total,
            workloads: vec![0.0; weights.len()],
        };
    }
    let of = used.max(clean(capacity));
    GramsSplit {
        node: total,
        kept_by_node: total * (1.0 - used / of),
        workloads: weights.iter().map(|w| total * clean(*w) / of).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{IdlePolicy, split};
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    fn sum(g: &GramsSplit) -> f64 {
        g.kept_by_node + g.workloads.iter().sum::<f64>()
    }

    fn valid(g: &GramsSplit) -> bool {
        std::iter::once(g.node)
            .chain(std::iter::once(g.kept_by_node))
            .chain(g.workloads.iter().copied())
            .all(|x| x.is_finite() && x >= 0.0)
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-1.0),
            Just(0.0),
            0.0f64..1e7,
        ]
    }

    fn policy() -> impl Strategy<Value = IdlePolicy> {
        prop_oneof![
            Just(IdlePolicy::Node),
            Just(IdlePolicy::Proportional),
            Just(IdlePolicy::Even)
        ]
    }

    #[test]
    fn one_kwh_at_400_g_with_pue() {
        let gpj = grams_per_joule(400.0, 1.5);
        assert!((grams(JOULES_PER_KWH, gpj) - 600.0).abs() < 1e-9);
        assert_eq!(grams_per_joule(400.0, 0.5), grams_per_joule(400.0, 1.0));
        assert_eq!(grams_per_joule(f64::NAN, 1.2), 0.0);
    }

    #[test]
    fn embodied_rate_follows_ccf() {
        // 1,000 kg over 4 years (35,040 h).
        let gps = embodied_grams_per_second(1000.0, Duration::from_secs(35_040 * 3600));
        assert!((gps - 1e6 / (35_040.0 * 3600.0)).abs() < 1e-15);
        assert_eq!(embodied_grams_per_second(1000.0, Duration::ZERO), 0.0);
        assert_eq!(embodied_grams_per_second(-1.0, Duration::from_secs(1)), 0.0);
    }

    #[test]
    fn embodied_shares() {
        // Two workloads used a quarter of the capacity: they take a quarter, 3:1.
        let e = embodied(10.0, 1.0, &[3.0, 1.0], 16.0);
        assert_eq!(e.workloads, [7.5 / 4.0, 2.5 / 4.0]);
        assert_eq!((e.node, e.kept_by_node), (10.0, 7.5));
        // Capacity unknown: all of it, like active energy.
        let e = embodied(10.0, 1.0, &[3.0, 1.0], 0.0);
        assert_eq!((e.workloads.clone(), e.kept_by_node), (vec![7.5, 2.5], 0.0));
        // Nothing ran: the node keeps it.
        let e = embodied(10.0, 1.0, &[0.0, 0.0], 16.0);
        assert_eq!(
            (e.kept_by_node, e.workloads.clone()),
            (10.0, vec![0.0, 0.0])
        );
    }

    #[test]
    fn operational_follows_the_energy_split() {
        let s = split(100.0, 40.0, &[3.0, 1.0], &[true, true], IdlePolicy::Node);
        // 1 g per joule (far above any grid): grams equal joules.
        let g = operational(&s, grams_per_joule(JOULES_PER_KWH, 1.0));
        assert_eq!((g.node, g.kept_by_node), (100.0, 40.0));
        assert_eq!(g.workloads, [45.0, 15.0]);
    }

    /// A run of intervals with an intensity that changes: integrating per interval gives
    /// Σ E_i × I_i, which the product of the mean power and the mean intensity does not.
    #[test]
    fn per_interval_integration_beats_the_product_of_averages() {
        let intervals = [(100.0, 200.0), (300.0, 600.0), (50.0, 100.0)]; // (J, g/kWh)
        let integrated: f64 = intervals
            .iter()
            .map(|(j, i)| grams(*j, grams_per_joule(*i, 1.0)))
            .sum();
        let exact = (100.0 * 200.0 + 300.0 * 600.0 + 50.0 * 100.0) / JOULES_PER_KWH;
        assert!(close(integrated, exact));
        let n = intervals.len() as f64;
        let mean_j = intervals.iter().map(|x| x.0).sum::<f64>() / n;
        let mean_i = intervals.iter().map(|x| x.1).sum::<f64>() / n;
        let product = mean_j * n * mean_i / JOULES_PER_KWH;
        assert!(
            (product - exact).abs() / exact > 0.1,
            "{product} vs {exact}"
        );
    }

    proptest! {
        /// Every gram of a zone's interval lands somewhere, and it is the node's energy times
        /// the factor.
        #[test]
        fn operational_conserves(
            energy in 0.0f64..1e6,
            idle in -10.0f64..2e6,
            ws in proptest::collection::vec((0.0f64..1e9, any::<bool>()), 0..50),
            p in policy(),
            intensity in 0.0f64..2000.0,
            pue in 1.0f64..3.0,
        ) {
            let weights: Vec<f64> = ws.iter().map(|w| w.0).collect();
            let running: Vec<bool> = ws.iter().map(|w| w.1).collect();
            let s = split(energy, idle, &weights, &running, p);
            let gpj = grams_per_joule(intensity, pue);
            let g = operational(&s, gpj);
            prop_assert!(close(sum(&g), g.node), "{} vs {}", sum(&g), g.node);
            prop_assert!(close(g.node, energy * intensity * pue / JOULES_PER_KWH));
            prop_assert_eq!(g.workloads.len(), weights.len());
            prop_assert!(valid(&g));
        }

        /// Embodied grams land somewhere too, and no workload gets more than its CPU share.
        #[test]
        fn embodied_conserves(
            seconds in 0.0f64..3600.0,
            gps in 0.0f64..1.0,
            ws in proptest::collection::vec(0.0f64..1e12, 0..50),
            capacity in 0.0f64..1e13,
        ) {
            let e = embodied(seconds, gps, &ws, capacity);
            prop_assert!(close(sum(&e), e.node));
            prop_assert!(close(e.node, seconds * gps));
            prop_assert!(valid(&e));
            let used: f64 = ws.iter().sum();
            if used > 0.0 && capacity >= used {
                for (w, g) in ws.iter().zip(&e.workloads) {
                    prop_assert!(*g <= e.node * w / capacity * (1.0 + 1e-12) + 1e-300);
                }
            }
        }

        /// Garbage in (NaN, infinities, negatives anywhere): no NaN or negative out, and still
        /// conserved.
        #[test]
        fn garbage_in_no_nan_out(
            energy in any_f64(),
            intensity in any_f64(),
            pue in any_f64(),
            seconds in any_f64(),
            kg in any_f64(),
            ws in proptest::collection::vec(any_f64(), 0..8),
            capacity in any_f64(),
        ) {
            let running = vec![true; ws.len()];
            let s = split(energy, 0.5 * energy, &ws, &running, IdlePolicy::Proportional);
            let g = operational(&s, grams_per_joule(intensity, pue));
            prop_assert!(valid(&g));
            prop_assert!(close(sum(&g), g.node));
            let gps = embodied_grams_per_second(kg, Duration::from_secs(86_400));
            let e = embodied(seconds, gps, &ws, capacity);
            prop_assert!(valid(&e));
            prop_assert!(close(sum(&e), e.node));
        }

        /// Many intervals with workloads that come and go: Σ live workloads + kept by the node
        /// + expired = node grams, as the attributor's ledger must keep it.
        #[test]
        fn a_ledger_over_many_intervals_reconciles(
            steps in proptest::collection::vec(
                (0.0f64..1e4, 0.0f64..2000.0,
                 proptest::collection::vec(0.0f64..1e9, 4), any::<u8>()),
                1..40),
            pue in 1.0f64..2.0,
        ) {
            let mut live = [0.0f64; 4];
            let (mut node, mut kept, mut expired) = (0.0, 0.0, 0.0);
            for (energy, intensity, weights, expire) in steps {
                let running = [true; 4];
                let s = split(energy, energy * 0.3, &weights, &running, IdlePolicy::Even);
                let g = operational(&s, grams_per_joule(intensity, pue));
                node += g.node;
                kept += g.kept_by_node;
                for (t, w) in live.iter_mut().zip(&g.workloads) {
                    *t += w;
                }
                // A workload whose series expires moves its total to the expired bucket.
                let i = usize::from(expire % 8);
                if i < 4 {
                    expired += std::mem::take(&mut live[i]);
                }
            }
            let accounted = live.iter().sum::<f64>() + kept + expired;
            prop_assert!(close(accounted, node), "{accounted} vs {node}");
        }
    }
}
