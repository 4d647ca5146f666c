//! Emissions kept beside the joules: each interval, each zone's energy split turned into grams
//! at the intensity in force during that interval ([`carbon::operational`]), and the server's
//! embodied footprint of the interval shared by CPU time ([`carbon::embodied`]). Totals are kept
//! per intensity source, so that a failover adds a series instead of moving one backwards; the
//! ledger applies to them the rules of the joules (pods roll up their containers, an expiring
//! workload's grams move to the expired bucket).

use std::collections::BTreeMap;

use super::{
    AttributedCarbon, Emissions, IntervalCarbon, NodeGrams, SourceGrams, deltas::Interval,
    split::Split,
};
use crate::carbon::{self, GramsSplit, SourceKind, grams, grams_per_joule};

/// `v[i] += x`, growing `v` as needed.
fn add_at(v: &mut Vec<f64>, i: usize, x: f64) {
    if v.len() <= i {
        v.resize(i + 1, 0.0);
    }
    v[i] += x;
}

/// One zone's interval in grams.
#[derive(Debug)]
pub(super) struct ZoneGrams {
    pub source: SourceKind,
    pub active: f64,
    pub idle: f64,
    /// The node's grams (active + idle), the part no workload took, and each workload's, in
    /// the order of the split.
    pub split: GramsSplit,
}

/// A zone's energy split in grams, at the intensity and PUE in force.
pub(super) fn zone_grams(s: &Split, c: &IntervalCarbon) -> ZoneGrams {
    let per_joule = grams_per_joule(c.reading.grams_per_kwh, c.pue);
    ZoneGrams {
        source: c.reading.source,
        active: grams(s.active, per_joule),
        idle: grams(s.idle, per_joule),
        split: carbon::operational(s, per_joule),
    }
}

/// The interval's embodied grams, shared by busy CPU time (whatever active energy is shared
/// by: the capacity is CPU time too) out of all CPUs' time, in the order of the workloads.
pub(super) fn embodied(interval: &Interval, grams_per_second: f64) -> GramsSplit {
    let cpu: Vec<f64> = (interval.workloads.values())
        .map(|(d, _)| d.cpu_ns as f64)
        .collect();
    carbon::embodied(
        interval.seconds,
        grams_per_second,
        &cpu,
        interval.cpu_capacity_ns,
    )
}

/// A workload's or pod's grams: totals per source and zone index, embodied, and this
/// interval's (for the pod).
#[derive(Clone, Debug, Default)]
pub(super) struct Account {
    operational: BTreeMap<SourceKind, Vec<f64>>,
    embodied: f64,
    interval: Vec<f64>,
    interval_source: Option<SourceKind>,
    interval_embodied: f64,
}

impl Account {
    pub fn start_interval(&mut self) {
        self.interval.fill(0.0);
        self.interval_source = None;
        self.interval_embodied = 0.0;
    }

    pub fn charge(&mut self, source: SourceKind, zone: usize, g: f64) {
        add_at(self.operational.entry(source).or_default(), zone, g);
        add_at(&mut self.interval, zone, g);
        self.interval_source = Some(source);
    }

    pub fn charge_embodied(&mut self, g: f64) {
        self.embodied += g;
        self.interval_embodied += g;
    }

    /// Adds `other`'s interval (a container's, to its pod).
    pub fn add_interval_of(&mut self, other: &Account) {
        if let Some(source) = other.interval_source {
            let totals = self.operational.entry(source).or_default();
            for (zone, g) in other.interval.iter().enumerate() {
                add_at(totals, zone, *g);
            }
        }
        self.embodied += other.interval_embodied;
    }

    /// Adds `other`'s totals (an expiring workload's, to the expired bucket).
    pub fn absorb(&mut self, other: &Account) {
        for (source, v) in &other.operational {
            let totals = self.operational.entry(*source).or_default();
            for (zone, g) in v.iter().enumerate() {
                add_at(totals, zone, *g);
            }
        }
        self.embodied += other.embodied;
    }

    /// The totals, per zone in the snapshot's order (`idx`: each zone's index here).
    pub fn totals(&self, idx: &[Option<usize>]) -> Emissions {
        let per_zone = |v: &[f64]| {
            idx.iter()
                .map(|i| i.and_then(|i| v.get(i).copied()).unwrap_or(0.0))
                .collect()
        };
        Emissions {
            operational: (self.operational.iter())
                .map(|(source, v)| SourceGrams {
                    source: *source,
                    grams: per_zone(v),
                })
                .collect(),
            embodied: self.embodied,
        }
    }
}

/// The node's grams: per zone index and source (active, idle, kept by the node), embodied, and
/// the expired workloads' grams.
#[derive(Debug, Default)]
pub(super) struct NodeCarbon {
    zones: Vec<BTreeMap<SourceKind, [f64; 3]>>,
    embodied_active: f64,
    embodied_idle: f64,
    pub expired: Account,
}

impl NodeCarbon {
    pub fn charge(&mut self, zone: usize, g: &ZoneGrams) {
        if self.zones.len() <= zone {
            self.zones.resize_with(zone + 1, BTreeMap::new);
        }
        let t = self.zones[zone].entry(g.source).or_default();
        t[0] += g.active;
        t[1] += g.idle;
        t[2] += g.split.kept_by_node;
    }

    pub fn charge_embodied(&mut self, e: &GramsSplit) {
        self.embodied_active += e.node - e.kept_by_node;
        self.embodied_idle += e.kept_by_node;
    }

    /// A zone's totals per source (none for a zone never charged).
    pub fn zone(&self, zone: Option<usize>) -> Vec<NodeGrams> {
        let Some(sources) = zone.and_then(|z| self.zones.get(z)) else {
            return Vec::new();
        };
        (sources.iter())
            .map(|(source, [active, idle, kept])| NodeGrams {
                source: *source,
                active: *active,
                idle: *idle,
                kept: *kept,
            })
            .collect()
    }

    pub fn snapshot(&self, in_force: &IntervalCarbon, idx: &[Option<usize>]) -> AttributedCarbon {
        AttributedCarbon {
            in_force: in_force.clone(),
            embodied_active: self.embodied_active,
            embodied_idle: self.embodied_idle,
            expired: self.expired.totals(idx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{IdlePolicy, split};

    fn reading(grams_per_kwh: f64, source: SourceKind) -> IntervalCarbon {
        IntervalCarbon {
            reading: carbon::Reading {
                grams_per_kwh,
                source,
                zone: None,
                is_estimated: None,
                fetched_at: std::time::Instant::now(),
                datetime: None,
            },
            pue: 1.5,
            embodied_grams_per_second: None,
        }
    }

    #[test]
    fn a_zone_in_grams_follows_its_energy_split() {
        // 3.6 MJ (1 kWh): 1 kWh at 400 g/kWh × PUE 1.5 = 600 g; 40% idle kept by the node.
        let s = split(3.6e6, 1.44e6, &[3.0, 1.0], &[true, true], IdlePolicy::Node);
        let g = zone_grams(&s, &reading(400.0, SourceKind::File));
        assert_eq!(g.source, SourceKind::File);
        assert!((g.active + g.idle - 600.0).abs() < 1e-9);
        assert!((g.idle - 240.0).abs() < 1e-9);
        assert!((g.split.kept_by_node - 240.0).abs() < 1e-9);
        assert!((g.split.workloads[0] - 270.0).abs() < 1e-9);
    }

    #[test]
    fn a_failover_adds_a_source_and_the_pod_and_expired_bucket_follow() {
        let mut c = Account::default();
        c.charge(SourceKind::Api, 1, 2.0);
        let mut pod = Account::default();
        pod.add_interval_of(&c);
        c.start_interval();
        c.charge(SourceKind::Default, 0, 5.0);
        c.charge_embodied(0.5);
        pod.add_interval_of(&c);
        let idx = [Some(1), Some(0)];
        let want = Emissions {
            operational: vec![
                SourceGrams {
                    source: SourceKind::Api,
                    grams: vec![2.0, 0.0],
                },
                SourceGrams {
                    source: SourceKind::Default,
                    grams: vec![0.0, 5.0],
                },
            ],
            embodied: 0.5,
        };
        assert_eq!(c.totals(&idx), want);
        assert_eq!(pod.totals(&idx), want, "the pod got both intervals");
        let mut expired = Account::default();
        expired.absorb(&c);
        expired.absorb(&c);
        assert_eq!(expired.totals(&idx).embodied, 1.0);
        assert_eq!(expired.totals(&idx).operational[1].grams, [0.0, 10.0]);
    }
}
