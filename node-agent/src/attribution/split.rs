//! The attribution math, pure: one zone's energy over one interval split into the node's idle
//! (static) part and an active part, and both shared among workloads. Inputs in, numbers out.

/// Where idle (static) energy goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IdlePolicy {
    /// Idle stays on the node's own series.
    #[default]
    Node,
    /// Idle is shared like active energy, by CPU share.
    Proportional,
    /// Idle is shared evenly among the running containers.
    Even,
}

/// One zone's energy over one interval, split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// Idle energy of the node.
    pub idle: f64,
    /// Active energy of the node (the rest).
    pub active: f64,
    /// The part of `idle` no workload took (all of it under [`IdlePolicy::Node`]), plus active
    /// energy of an interval in which nothing ran.
    pub kept_by_node: f64,
    /// Per workload (same order as the weights): its active and idle shares.
    pub workload_active: Vec<f64>,
    pub workload_idle: Vec<f64>,
}

fn clean(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// Splits `energy` joules: `idle_estimate` joules of it are idle (clamped to 0..=energy), the
/// rest active; active goes to workloads in proportion to `weights` (their busy CPU time or
/// cycles); idle goes by `policy`. `running[i]` says whether workload i is a running container
/// (for [`IdlePolicy::Even`]). If nothing ran, every joule is the node's idle: nothing is lost.
///
/// Always: `kept_by_node + Σ workload_active + Σ workload_idle = energy` (up to rounding) and
/// `idle + active = energy`.
pub fn split(
    energy: f64,
    idle_estimate: f64,
    weights: &[f64],
    running: &[bool],
    policy: IdlePolicy,
) -> Split {
    let energy = clean(energy);
    let total_weight: f64 = weights.iter().map(|w| clean(*w)).sum();
    let n = weights.len();
    let mut s = Split {
        workload_active: vec![0.0; n],
        workload_idle: vec![0.0; n],
        ..Split::default()
    };
    if total_weight <= 0.0 {
        // Nothing ran: all of it is idle, and stays on the node.
        s.idle = energy;
        s.kept_by_node = energy;
        return s;
    }
    s.idle = clean(idle_estimate).min(energy);
    s.active = energy - s.idle;
    for (i, w) in weights.iter().enumerate() {
        s.workload_active[i] = s.active * clean(*w) / total_weight;
    }
    let runners = running.iter().filter(|r| **r).count();
    match policy {
        IdlePolicy::Proportional => {
            for (i, w) in weights.iter().enumerate() {
                s.workload_idle[i] = s.idle * clean(*w) / total_weight;
            }
        }
        IdlePolicy::Even if runners > 0 => {
            for (i, r) in running.iter().enumerate().take(n) {
                if *r {
                    s.workload_idle[i] = s.idle / runners as f64;
                }
            }
        }
        IdlePolicy::Even | IdlePolicy::Node => s.kept_by_node = s.idle,
    }
    s
}

/// The platform zone's interval, split: [`split_platform`]'s result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlatformSplit {
    /// The whole platform: the CPU zones' splits plus the rest's, part by part.
    pub split: Split,
    /// The rest alone (fans, disks, NICs, the supplies' losses): its own idle and active.
    pub rest: Split,
    /// Joules by which the CPU zones exceeded the platform meter (0 unless it read lower than
    /// they did): the platform was then shared as the CPU zones, scaled down to its figure.
    pub cpu_excess: f64,
}

/// Splits one interval of the whole platform (a BMC's figure) into the CPU zones it contains
/// and the rest: `platform` joules = Σ `cpu` zones' energy (package, dram, already split) + the
/// rest. The rest's `rest_idle` joules are idle (clamped to 0..=rest) and the remainder active,
/// shared like [`split`] shares a zone; each part of the result is the CPU zones' part plus the
/// rest's, so each workload's platform share is at least its CPU zones' share.
///
/// A meter that reads lower than the CPU zones (its lag and averaging against RAPL's
/// instant counters) leaves a negative rest: the rest is then 0 and the platform is the CPU
/// zones' splits scaled down to `platform`, the difference counted in `cpu_excess`. With no
/// CPU zones (none measured, or a meter with nothing to compare them with) it is [`split`].
///
/// Always: `kept_by_node + Σ workload_active + Σ workload_idle = platform` (up to rounding).
pub fn split_platform(
    platform: f64,
    cpu: &[&Split],
    rest_idle: f64,
    weights: &[f64],
    running: &[bool],
    policy: IdlePolicy,
) -> PlatformSplit {
    let platform = clean(platform);
    let n = weights.len();
    let cpu_energy: f64 = cpu.iter().map(|s| s.idle + s.active).sum();
    if platform < cpu_energy {
        let rest = split(0.0, 0.0, weights, running, policy);
        return PlatformSplit {
            split: scaled_sum(cpu, platform / cpu_energy, n),
            rest,
            cpu_excess: cpu_energy - platform,
        };
    }
    let rest = split(platform - cpu_energy, rest_idle, weights, running, policy);
    let mut whole = scaled_sum(cpu, 1.0, n);
    add(&mut whole, &rest, 1.0);
    PlatformSplit {
        split: whole,
        rest,
        cpu_excess: 0.0,
    }
}

/// Σ `splits` × `factor`, part by part, over `n` workloads.
fn scaled_sum(splits: &[&Split], factor: f64, n: usize) -> Split {
    let mut sum = Split {
        workload_active: vec![0.0; n],
        workload_idle: vec![0.0; n],
        ..Split::default()
    };
    for s in splits {
        add(&mut sum, s, factor);
    }
    sum
}

/// `sum += s × factor`, part by part.
fn add(sum: &mut Split, s: &Split, factor: f64) {
    sum.idle += s.idle * factor;
    sum.active += s.active * factor;
    sum.kept_by_node += s.kept_by_node * factor;
    let pairs = (sum.workload_active.iter_mut()).zip(&s.workload_active);
    for (a, b) in pairs.chain(sum.workload_idle.iter_mut().zip(&s.workload_idle)) {
        *a += b * factor;
    }
}

/// A counter's increase since the previous reading: if it went down, it restarted from zero and
/// the whole value is new.
pub fn increase(previous: Option<u64>, now: u64) -> u64 {
    match previous {
        Some(p) if now >= p => now - p,
        _ => now,
    }
}

/// Idle power estimated from measurements: the intercept at zero load of a least-squares line of
/// power against the busy ratio, over a window of intervals. `None` until the window holds at
/// least `MIN_POINTS` points with enough spread in load to fit a line.
pub fn idle_intercept(points: &[(f64, f64)]) -> Option<f64> {
    const MIN_POINTS: usize = 10;
    // The busy ratio must spread by at least this standard deviation for a meaningful slope.
    const MIN_SPREAD: f64 = 0.1;
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.len() < MIN_POINTS {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx / n < MIN_SPREAD * MIN_SPREAD {
        return None;
    }
    let intercept = my - sxy / sxx * mx;
    // Idle power is at least 0 and at most the lowest power seen.
    let lowest = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    Some(intercept.clamp(0.0, lowest.max(0.0)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn total(s: &Split) -> f64 {
        s.kept_by_node + s.workload_active.iter().sum::<f64>() + s.workload_idle.iter().sum::<f64>()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// Any idle policy (shared with the ledger's property tests).
    pub(crate) fn policy() -> impl Strategy<Value = IdlePolicy> {
        prop_oneof![
            Just(IdlePolicy::Node),
            Just(IdlePolicy::Proportional),
            Just(IdlePolicy::Even)
        ]
    }

    proptest! {
        /// Every joule lands somewhere, whatever the inputs and the policy.
        #[test]
        fn conserves_energy(
            energy in 0.0f64..1e6,
            idle in -10.0f64..2e6,
            ws in proptest::collection::vec((0.0f64..1e9, any::<bool>()), 0..50),
            p in policy(),
        ) {
            let weights: Vec<f64> = ws.iter().map(|w| w.0).collect();
            let running: Vec<bool> = ws.iter().map(|w| w.1).collect();
            let s = split(energy, idle, &weights, &running, p);
            prop_assert!(close(total(&s), energy), "{} vs {energy}", total(&s));
            prop_assert!(close(s.idle + s.active, energy));
            prop_assert!(s.idle >= 0.0 && s.active >= 0.0);
            prop_assert!(s.workload_active.iter().chain(&s.workload_idle).all(|x| *x >= 0.0));
        }

        /// Active energy is shared exactly in proportion to the weights.
        #[test]
        fn shares_follow_weights(a in 1.0f64..1e9, b in 1.0f64..1e9, energy in 1.0f64..1e5) {
            let s = split(energy, 0.0, &[a, b], &[true, true], IdlePolicy::Node);
            prop_assert!(close(s.workload_active[0] / s.workload_active[1], a / b));
        }

        /// Bad numbers from a broken input never produce NaN or negative energy.
        #[test]
        fn garbage_in_no_nan_out(
            energy in prop_oneof![Just(f64::NAN), Just(-5.0), Just(f64::INFINITY), 0.0f64..10.0],
            w in prop_oneof![Just(f64::NAN), Just(-1.0), 0.0f64..10.0],
        ) {
            let s = split(energy, 1.0, &[w, 1.0], &[true, false], IdlePolicy::Even);
            prop_assert!(total(&s).is_finite() && total(&s) >= 0.0);
        }

        /// The intercept of an exact line with enough spread is the line's intercept.
        #[test]
        fn intercept_of_a_line(
            idle in 1.0f64..500.0,
            slope in 0.0f64..500.0,
            xs in proptest::collection::vec(0.0f64..1.0, 10..100),
        ) {
            let pts: Vec<(f64, f64)> = xs.iter().map(|x| (*x, idle + slope * x)).collect();
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            match idle_intercept(&pts) {
                Some(est) => prop_assert!((est - idle).abs() < 1e-6 * idle, "{est} vs {idle}"),
                None => prop_assert!(var < 0.01),
            }
        }
    }

    proptest! {
        /// The platform conserves its own figure whatever the CPU zones say, and when it
        /// reads at least their sum, every workload's platform share holds its CPU shares.
        #[test]
        fn the_platform_conserves_and_holds_the_cpu_shares(
            cpu in proptest::collection::vec((0.0f64..1e4, -1.0f64..2e4), 0..3),
            platform in 0.0f64..5e4,
            rest_idle in -10.0f64..3e4,
            ws in proptest::collection::vec((0.0f64..1e9, any::<bool>()), 0..20),
            p in policy(),
        ) {
            let weights: Vec<f64> = ws.iter().map(|w| w.0).collect();
            let running: Vec<bool> = ws.iter().map(|w| w.1).collect();
            let zones: Vec<Split> = (cpu.iter())
                .map(|(e, idle)| split(*e, *idle, &weights, &running, p))
                .collect();
            let refs: Vec<&Split> = zones.iter().collect();
            let ps = split_platform(platform, &refs, rest_idle, &weights, &running, p);
            let s = &ps.split;
            prop_assert!(close(total(s), platform), "{} vs {platform}", total(s));
            prop_assert!(close(s.idle + s.active, platform));
            let cpu_energy: f64 = cpu.iter().map(|c| c.0).sum();
            prop_assert!(close(ps.cpu_excess, (cpu_energy - platform).max(0.0)));
            if platform >= cpu_energy {
                for i in 0..weights.len() {
                    let own = |s: &Split| s.workload_active[i] + s.workload_idle[i];
                    let cpu_share: f64 = zones.iter().map(own).sum();
                    prop_assert!(own(s) >= cpu_share, "{i}: {} < {cpu_share}", own(s));
                }
            }
        }
    }

    #[test]
    fn the_platform_is_the_cpu_zones_plus_the_rest_or_the_cpu_zones_scaled_down() {
        let (w, r) = ([3.0, 1.0], [true, true]);
        let package = split(100.0, 40.0, &w, &r, IdlePolicy::Node);
        let dram = split(20.0, 0.0, &w, &r, IdlePolicy::Node);
        // 200 J from the BMC: 120 J of CPU zones and a rest of 80 J, 50 J of it idle.
        let p = split_platform(200.0, &[&package, &dram], 50.0, &w, &r, IdlePolicy::Node);
        assert_eq!(
            (p.rest.idle, p.rest.active, p.cpu_excess),
            (50.0, 30.0, 0.0)
        );
        assert_eq!((p.split.idle, p.split.active), (90.0, 110.0));
        assert_eq!(p.split.workload_active, [60.0 + 22.5, 20.0 + 7.5]);
        assert_eq!(p.split.kept_by_node, 90.0);
        // 60 J from the BMC, below the CPU zones' 120 J: their splits at half, 60 J counted.
        let p = split_platform(60.0, &[&package, &dram], 50.0, &w, &r, IdlePolicy::Node);
        assert_eq!((p.rest.idle + p.rest.active, p.cpu_excess), (0.0, 60.0));
        assert_eq!(p.split.workload_active, [30.0, 10.0]);
        assert_eq!(p.split.kept_by_node, 20.0);
        // Nothing to compare with: a plain split.
        let p = split_platform(60.0, &[], 10.0, &w, &r, IdlePolicy::Node);
        assert_eq!(p.split, split(60.0, 10.0, &w, &r, IdlePolicy::Node));
    }

    #[test]
    fn zero_busy_time_keeps_everything_on_the_node() {
        let s = split(100.0, 40.0, &[0.0, 0.0], &[true, true], IdlePolicy::Even);
        assert_eq!((s.idle, s.active, s.kept_by_node), (100.0, 0.0, 100.0));
        let s = split(100.0, 40.0, &[], &[], IdlePolicy::Proportional);
        assert_eq!(s.kept_by_node, 100.0);
    }

    #[test]
    fn one_cgroup_takes_all_active() {
        let s = split(100.0, 40.0, &[5.0], &[true], IdlePolicy::Node);
        assert_eq!(
            (s.idle, s.active, s.workload_active[0], s.kept_by_node),
            (40.0, 60.0, 60.0, 40.0)
        );
    }

    #[test]
    fn idle_policies() {
        let w = [3.0, 1.0, 0.0];
        let r = [true, true, false];
        let p = split(100.0, 40.0, &w, &r, IdlePolicy::Proportional);
        assert_eq!(p.workload_idle, [30.0, 10.0, 0.0]);
        assert_eq!(p.kept_by_node, 0.0);
        let e = split(100.0, 40.0, &w, &r, IdlePolicy::Even);
        assert_eq!(e.workload_idle, [20.0, 20.0, 0.0]);
        let none_running = split(100.0, 40.0, &w, &[false; 3], IdlePolicy::Even);
        assert_eq!(none_running.kept_by_node, 40.0);
        // An idle estimate above the energy (a quiet interval, a high estimate) is clamped.
        let c = split(30.0, 40.0, &w, &r, IdlePolicy::Node);
        assert_eq!((c.idle, c.active), (30.0, 0.0));
    }

    #[test]
    fn counter_resets() {
        assert_eq!(increase(Some(10), 15), 5);
        assert_eq!(increase(Some(10), 3), 3, "restarted from zero");
        assert_eq!(increase(None, 7), 7, "new: all of it is new");
    }

    #[test]
    fn intercept_needs_spread() {
        let flat: Vec<(f64, f64)> = (0..20).map(|i| (0.5, 70.0 + i as f64 * 0.01)).collect();
        assert_eq!(idle_intercept(&flat), None);
        let few: Vec<(f64, f64)> = (0..5).map(|i| (i as f64 / 5.0, 40.0)).collect();
        assert_eq!(idle_intercept(&few), None);
        let line: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64 / 20.0, 40.0 + 60.0 * i as f64 / 20.0))
            .collect();
        assert!((idle_intercept(&line).unwrap() - 40.0).abs() < 1e-9);
    }
}
