//! What a report holds, and its arithmetic: figures per group over a span (the whole period, or
//! one UTC day), their totals, and the inputs of the Software Carbon Intensity (SCI) that the
//! figures come from. Pure: the queries fill it, the formats show it.

use std::collections::BTreeMap;

use super::{args::GroupBy, queries::Measure};

pub const JOULES_PER_KWH: f64 = 3.6e6;

/// A group's figures over a span; `None` where the agents export no such series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub energy_joules: f64,
    pub cpu_seconds: Option<f64>,
    pub operational_grams: Option<f64>,
    pub embodied_grams: Option<f64>,
}

impl Figures {
    pub fn kwh(&self) -> f64 {
        self.energy_joules / JOULES_PER_KWH
    }

    /// Average power over a span of `seconds`: its energy spread over the whole span, whether
    /// or not the group ran all of it.
    pub fn avg_watts(&self, seconds: f64) -> f64 {
        if seconds > 0.0 {
            self.energy_joules / seconds
        } else {
            0.0
        }
    }

    pub fn cpu_hours(&self) -> Option<f64> {
        self.cpu_seconds.map(|s| s / 3600.0)
    }

    /// Sets one measure's value.
    pub fn set(&mut self, m: Measure, v: f64) {
        match m {
            Measure::Energy => self.energy_joules = v,
            Measure::Cpu => self.cpu_seconds = Some(v),
            Measure::Operational => self.operational_grams = Some(v),
            Measure::Embodied => self.embodied_grams = Some(v),
        }
    }

    /// Adds `other` in: a known value plus an unknown one is the known one.
    pub fn add(&mut self, other: &Figures) {
        fn plus(a: &mut Option<f64>, b: Option<f64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0.0) + b);
            }
        }
        self.energy_joules += other.energy_joules;
        plus(&mut self.cpu_seconds, other.cpu_seconds);
        plus(&mut self.operational_grams, other.operational_grams);
        plus(&mut self.embodied_grams, other.embodied_grams);
    }
}

/// One group's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub group: String,
    pub figures: Figures,
}

/// The groups' figures over [from, to) (Unix milliseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub from: i64,
    pub to: i64,
    pub rows: Vec<Row>,
    /// Energy and emissions came from the daily recording rules (else raw counters).
    pub from_rules: bool,
}

impl Span {
    pub fn seconds(&self) -> f64 {
        (self.to - self.from) as f64 / 1000.0
    }

    pub fn total(&self) -> Figures {
        let mut t = Figures::default();
        for r in &self.rows {
            t.add(&r.figures);
        }
        t
    }

    /// Rows from figures keyed by group, most energy first (then by name).
    pub fn new(from: i64, to: i64, groups: BTreeMap<String, Figures>, from_rules: bool) -> Self {
        let mut rows: Vec<Row> = groups
            .into_iter()
            .map(|(group, figures)| Row { group, figures })
            .collect();
        rows.sort_by(|a, b| b.figures.energy_joules.total_cmp(&a.figures.energy_joules));
        Self {
            from,
            to,
            rows,
            from_rules,
        }
    }

    /// The same rows in `order` (groups not in it last, by energy).
    pub fn ordered_like(mut self, order: &[String]) -> Self {
        let rank = |g: &str| order.iter().position(|o| o == g).unwrap_or(order.len());
        self.rows.sort_by_key(|r| rank(&r.group));
        self
    }
}

/// The name a group goes by, from its series' labels. Pods unknown to the API server are
/// named by uid; workloads without pod metadata have no namespace.
pub fn group_name(by: GroupBy, labels: &BTreeMap<String, String>) -> String {
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
    match by {
        GroupBy::Namespace if get("namespace").is_empty() => UNNAMED.into(),
        GroupBy::Namespace => get("namespace").into(),
        GroupBy::Pod if !get("pod").is_empty() => format!("{}/{}", get("namespace"), get("pod")),
        GroupBy::Pod if !get("pod_uid").is_empty() => format!("pod {}", get("pod_uid")),
        GroupBy::Pod => UNNAMED.into(),
        GroupBy::Node => get("node").into(),
    }
}

/// The group of workloads the API server has not named.
pub const UNNAMED: &str = "(no pod metadata)";

/// A grid intensity in force during the period.
#[derive(Clone, Debug, PartialEq)]
pub struct Intensity {
    pub source: String,
    pub zone: String,
    /// Its mean over the period.
    pub grams_per_kwh: f64,
}

/// A node's power source during the period.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSource {
    pub node: String,
    pub source: String,
    pub estimated: bool,
    pub model: String,
}

/// What the figures rest on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    pub intensity: Vec<Intensity>,
    /// Mean PUE: the lowest and highest node's.
    pub pue: Option<(f64, f64)>,
    pub sources: Vec<NodeSource>,
    /// Figures with no series in the period: their columns say n/a.
    pub missing: Vec<Measure>,
}

impl Inputs {
    /// Nodes whose power was measured, and nodes whose power was modelled (a node whose sensor
    /// came or went during the period counts in both).
    pub fn measured_and_modelled(&self) -> (usize, usize) {
        let count = |estimated: bool| {
            let mut nodes: Vec<&str> = self
                .sources
                .iter()
                .filter(|s| s.estimated == estimated)
                .map(|s| s.node.as_str())
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            nodes.len()
        };
        (count(false), count(true))
    }

    /// `powercap ×2, model (average)`: the sources in use, with how many nodes each.
    pub fn source_summary(&self, estimated: bool) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in self.sources.iter().filter(|s| s.estimated == estimated) {
            let name = if s.model.is_empty() {
                s.source.clone()
            } else {
                format!("{} ({})", s.source, s.model)
            };
            *counts.entry(name).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(s, n)| if n == 1 { s } else { format!("{s} ×{n}") })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub prometheus: String,
    pub by: GroupBy,
    pub period: Span,
    /// Each UTC day of the period (the first and last may be partial).
    pub days: Vec<Span>,
    pub inputs: Inputs,
}

impl Report {
    /// O ÷ E: the intensity the operational emissions amount to (I × PUE, weighted by energy
    /// when the intensity changed), in g/kWh.
    pub fn effective_intensity(&self) -> Option<f64> {
        let t = self.period.total();
        t.operational_grams
            .filter(|_| t.energy_joules > 0.0)
            .map(|o| o / t.kwh())
    }
}

/// The spans of the UTC days [from, to) touches: whole days, and partial ones at the ends.
pub fn days(from: i64, to: i64) -> Vec<(i64, i64)> {
    use super::time::{DAY, day_start};
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = (day_start(start) + DAY).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::time::DAY;

    fn figures(j: f64, o: Option<f64>) -> Figures {
        Figures {
            energy_joules: j,
            cpu_seconds: Some(j / 10.0),
            operational_grams: o,
            embodied_grams: None,
        }
    }

    #[test]
    fn units() {
        let f = figures(7.2e6, None);
        assert_eq!(f.kwh(), 2.0);
        // 2 kWh over a day: 83.3 W on average.
        assert!((f.avg_watts(86_400.0) - 83.333).abs() < 1e-3);
        assert_eq!(f.cpu_hours(), Some(200.0));
    }

    #[test]
    fn totals_keep_unknowns_unknown() {
        let groups = BTreeMap::from([
            ("a".to_owned(), figures(100.0, Some(3.0))),
            ("b".to_owned(), figures(300.0, None)),
        ]);
        let span = Span::new(0, 10, groups, false);
        assert_eq!(span.rows[0].group, "b", "most energy first");
        let t = span.total();
        assert_eq!(t.energy_joules, 400.0);
        assert_eq!(t.operational_grams, Some(3.0));
        assert_eq!(t.embodied_grams, None, "n/a stays n/a, never 0");
    }

    #[test]
    fn days_are_utc_and_cut_at_the_ends() {
        let from = 10 * DAY + 3_600_000;
        assert_eq!(
            days(from, 12 * DAY + 60_000),
            [
                (from, 11 * DAY),
                (11 * DAY, 12 * DAY),
                (12 * DAY, 12 * DAY + 60_000)
            ]
        );
        assert_eq!(days(DAY, 2 * DAY), [(DAY, 2 * DAY)]);
        assert_eq!(days(100, 400), [(100, 400)]);
    }

    #[test]
    fn groups_are_named() {
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let ns = l(&[("namespace", "shop"), ("pod", "web-1"), ("pod_uid", "u1")]);
        assert_eq!(group_name(GroupBy::Namespace, &ns), "shop");
        assert_eq!(group_name(GroupBy::Pod, &ns), "shop/web-1");
        let unnamed = l(&[("namespace", ""), ("pod", ""), ("pod_uid", "u2")]);
        assert_eq!(group_name(GroupBy::Namespace, &unnamed), UNNAMED);
        assert_eq!(group_name(GroupBy::Pod, &unnamed), "pod u2");
        assert_eq!(group_name(GroupBy::Node, &l(&[("node", "n1")])), "n1");
    }

    #[test]
    fn measured_and_modelled_nodes() {
        let s = |node: &str, source: &str, estimated: bool, model: &str| NodeSource {
            node: node.into(),
            source: source.into(),
            estimated,
            model: model.into(),
        };
        let inputs = Inputs {
            sources: vec![
                s("a", "powercap", false, ""),
                s("b", "powercap", false, ""),
                s("c", "model", true, "average"),
                // b lost its sensor during the period.
                s("b", "model", true, "average"),
            ],
            ..Inputs::default()
        };
        assert_eq!(inputs.measured_and_modelled(), (2, 2));
        assert_eq!(inputs.source_summary(false), "powercap ×2");
        assert_eq!(inputs.source_summary(true), "model (average) ×2");
    }
}
