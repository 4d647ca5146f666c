//! The idle power of each zone: set by the operator, the power model's own, or measured — the
//! intercept of power against the busy ratio over a sliding window, else the lowest power seen.

use std::collections::{BTreeMap, VecDeque};

use super::split::idle_intercept;
use crate::power::zone::PLATFORM;

/// The platform's rest (its power less the CPU zones') in the estimates: not a zone name (it
/// has a space), so never a zone's key.
const REST: &str = "platform rest";

/// How a zone's idle power is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleMethod {
    /// Set with --power.idle-watts.
    Configured,
    /// The power model's idle figure.
    Model,
    /// The intercept of power against busy ratio over the recent window.
    Regression,
    /// Not enough spread in load yet for a regression: the lowest power seen, an upper bound.
    Minimum,
}

impl IdleMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            IdleMethod::Configured => "configured",
            IdleMethod::Model => "model",
            IdleMethod::Regression => "regression",
            IdleMethod::Minimum => "minimum",
        }
    }
}

/// One zone's recent (busy ratio, watts) points and the estimate they gave.
#[derive(Debug, Default)]
struct ZoneIdle {
    window: VecDeque<(f64, f64)>,
    /// The last regression result: kept when the window's load stops varying, rather than
    /// falling back to the minimum.
    last_regression: Option<f64>,
    estimate: Option<(f64, IdleMethod)>,
}

/// The idle estimate of every zone.
#[derive(Debug)]
pub(crate) struct IdleEstimates {
    configured: Vec<(String, f64)>,
    /// Intervals in the sliding window (at least 2).
    window: usize,
    zones: BTreeMap<String, ZoneIdle>,
}

impl IdleEstimates {
    pub fn new(configured: Vec<(String, f64)>, window: usize) -> Self {
        Self {
            configured,
            window: window.max(2),
            zones: BTreeMap::new(),
        }
    }

    /// Takes one interval of a zone: its average power, if known, at this busy ratio, and the
    /// idle power its source knows (the model's). Returns the idle power in use.
    pub fn update(
        &mut self,
        zone: &str,
        watts: Option<f64>,
        busy_ratio: f64,
        source: &[(String, f64)],
    ) -> Option<(f64, IdleMethod)> {
        let z = self.zones.entry(zone.to_owned()).or_default();
        if let Some(w) = watts {
            z.window.push_back((busy_ratio, w));
            while z.window.len() > self.window {
                z.window.pop_front();
            }
        }
        z.estimate = idle_estimate(zone, &self.configured, source, &z.window, z.last_regression);
        if let Some((w, IdleMethod::Regression)) = z.estimate {
            z.last_regression = Some(w);
        }
        z.estimate
    }

    /// Takes one interval of the platform's rest: its average power, if measured, and the CPU
    /// zones' idle power in use. The rest's idle is measured on its own series by the same
    /// estimators, or, with `--power.idle-watts platform=W`, is W less the CPU zones' idle. The
    /// platform's estimate becomes the CPU zones' idle + the rest's. Returns the rest's idle
    /// power (none before its second reading).
    pub fn update_platform(
        &mut self,
        rest_watts: Option<f64>,
        busy_ratio: f64,
        cpu_idle: f64,
    ) -> Option<f64> {
        let configured = (self.configured.iter())
            .find(|(z, _)| z == PLATFORM)
            .map(|(_, w)| *w);
        let measured = self.update(REST, rest_watts, busy_ratio, &[]);
        let rest = match configured {
            Some(w) => Some(((w - cpu_idle).max(0.0), IdleMethod::Configured)),
            None => measured,
        };
        let platform = self.zones.entry(PLATFORM.to_owned()).or_default();
        platform.estimate = rest.map(|(w, method)| (w + cpu_idle, method));
        rest.map(|(w, _)| w)
    }

    /// The idle power in use for `zone` (none before its second reading).
    pub fn estimate(&self, zone: &str) -> Option<(f64, IdleMethod)> {
        self.zones.get(zone).and_then(|z| z.estimate)
    }
}

/// The idle power of a zone: configured, else the source's own (the model), else measured.
fn idle_estimate(
    zone: &str,
    configured: &[(String, f64)],
    source: &[(String, f64)],
    window: &VecDeque<(f64, f64)>,
    last_regression: Option<f64>,
) -> Option<(f64, IdleMethod)> {
    if let Some((_, w)) = configured.iter().find(|(z, _)| z == zone) {
        return Some((*w, IdleMethod::Configured));
    }
    if let Some((_, w)) = source.iter().find(|(z, _)| z == zone) {
        return Some((*w, IdleMethod::Model));
    }
    let points: Vec<(f64, f64)> = window.iter().copied().collect();
    if let Some(w) = idle_intercept(&points).or(last_regression) {
        return Some((w, IdleMethod::Regression));
    }
    points
        .iter()
        .map(|p| p.1)
        .filter(|w| w.is_finite())
        .reduce(f64::min)
        .map(|w| (w.max(0.0), IdleMethod::Minimum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_before_model_before_measured() {
        let model = [("package".to_owned(), 7.0)];
        let mut e = IdleEstimates::new(vec![("dram".into(), 2.0)], 10);
        assert_eq!(
            e.update("dram", Some(5.0), 0.5, &model),
            Some((2.0, IdleMethod::Configured))
        );
        assert_eq!(
            e.update("package", Some(50.0), 0.5, &model),
            Some((7.0, IdleMethod::Model))
        );
        assert_eq!(e.estimate("package"), Some((7.0, IdleMethod::Model)));
        assert_eq!(e.estimate("core"), None);
    }

    #[test]
    fn the_platforms_rest_has_its_own_estimate_and_the_platforms_adds_the_cpu_zones() {
        let mut e = IdleEstimates::new(Vec::new(), 12);
        assert_eq!(e.update_platform(None, 0.5, 40.0), None);
        assert_eq!(e.estimate("platform"), None);
        // The rest at 80 W + 20 W × busy: its intercept, and the platform's with 40 W of CPU idle.
        let mut rest = None;
        for i in 0..12 {
            let busy = (i % 4) as f64 / 4.0;
            rest = e.update_platform(Some(80.0 + 20.0 * busy), busy, 40.0);
        }
        assert!((rest.unwrap() - 80.0).abs() < 1e-9, "{rest:?}");
        let (w, method) = e.estimate("platform").unwrap();
        assert_eq!(method, IdleMethod::Regression);
        assert!((w - 120.0).abs() < 1e-9, "{w}");
        // Configured for the whole platform: the rest is what the CPU zones leave of it.
        let mut e = IdleEstimates::new(vec![("platform".into(), 150.0)], 12);
        assert_eq!(e.update_platform(Some(10.0), 0.5, 40.0), Some(110.0));
        assert_eq!(
            e.estimate("platform"),
            Some((150.0, IdleMethod::Configured))
        );
        assert_eq!(e.update_platform(None, 0.5, 200.0), Some(0.0));
    }

    #[test]
    fn the_minimum_until_the_load_varies_then_the_regression_which_is_kept() {
        let mut e = IdleEstimates::new(Vec::new(), 12);
        assert_eq!(
            e.update("package", Some(70.0), 0.5, &[]),
            Some((70.0, IdleMethod::Minimum))
        );
        // 40 W + 60 W × busy, the busy ratio varying.
        let mut last = None;
        for i in 0..10 {
            let busy = (i % 5) as f64 / 5.0 + 0.1;
            last = e.update("package", Some(40.0 + 60.0 * busy), busy, &[]);
        }
        let (w, method) = last.unwrap();
        assert_eq!(method, IdleMethod::Regression);
        assert!((w - 40.0).abs() < 1e-9, "{w}");
        // The load stops varying (the window holds one busy ratio only): the last regression
        // stays in use rather than the minimum.
        for _ in 0..12 {
            e.update("package", Some(55.0), 0.25, &[]);
        }
        let (w, method) = e.estimate("package").unwrap();
        assert_eq!(method, IdleMethod::Regression);
        assert!((w - 40.0).abs() < 1e-9, "{w}");
    }
}
