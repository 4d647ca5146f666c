//! `--format json`: the whole report as one versioned document. Energy in kWh, emissions in
//! gCO2e, times in RFC 3339 (UTC); `null` where the agents export no such series.

use serde::Serialize;

use super::{
    model::{Figures, Report, Span},
    queries::{self, Measure},
    render, time,
};
use crate::snapshot::TOTAL_ZONES;

/// Bumped on any change that could break a reader; additions keep it.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Doc<'a> {
    version: u32,
    prometheus: &'a str,
    group_by: &'static str,
    /// The zones energy and emissions are summed over.
    zones: [&'static str; 2],
    period: SpanDoc<'a>,
    days: Vec<SpanDoc<'a>>,
    sci: Sci<'a>,
}

#[derive(Serialize)]
struct SpanDoc<'a> {
    from: String,
    to: String,
    seconds: f64,
    /// `rules` when energy and emissions came from the daily recording rules.
    source: &'static str,
    groups: Vec<GroupDoc<'a>>,
    total: FiguresDoc,
}

#[derive(Serialize)]
struct GroupDoc<'a> {
    group: &'a str,
    #[serde(flatten)]
    figures: FiguresDoc,
}

#[derive(Serialize)]
struct FiguresDoc {
    energy_kwh: f64,
    avg_power_watts: f64,
    cpu_hours: Option<f64>,
    operational_gco2e: Option<f64>,
    embodied_gco2e: Option<f64>,
}

#[derive(Serialize)]
struct Sci<'a> {
    energy_kwh: f64,
    /// What the energy is, and the counter it comes from.
    energy_meaning: &'static str,
    energy_series: String,
    operational_gco2e: Option<f64>,
    operational_series: String,
    embodied_gco2e: Option<f64>,
    embodied_series: String,
    intensity: Vec<IntensityDoc<'a>>,
    /// O ÷ E, in g/kWh.
    effective_intensity_grams_per_kwh: Option<f64>,
    pue: Option<PueDoc>,
    power: PowerDoc<'a>,
    /// Figures with no series in the period.
    missing: Vec<&'static str>,
}

#[derive(Serialize)]
struct IntensityDoc<'a> {
    source: &'a str,
    zone: &'a str,
    mean_grams_per_kwh: f64,
}

#[derive(Serialize)]
struct PueDoc {
    min: f64,
    max: f64,
}

#[derive(Serialize)]
struct PowerDoc<'a> {
    measured_nodes: usize,
    modelled_nodes: usize,
    nodes: Vec<NodeDoc<'a>>,
}

#[derive(Serialize)]
struct NodeDoc<'a> {
    node: &'a str,
    source: &'a str,
    estimated: bool,
    model: &'a str,
}

fn figures(f: &Figures, seconds: f64) -> FiguresDoc {
    FiguresDoc {
        energy_kwh: f.kwh(),
        avg_power_watts: f.avg_watts(seconds),
        cpu_hours: f.cpu_hours(),
        operational_gco2e: f.operational_grams,
        embodied_gco2e: f.embodied_grams,
    }
}

fn span(s: &Span) -> SpanDoc<'_> {
    SpanDoc {
        from: time::rfc3339(s.from),
        to: time::rfc3339(s.to),
        seconds: s.seconds(),
        source: if s.from_rules { "rules" } else { "raw" },
        groups: s
            .rows
            .iter()
            .map(|r| GroupDoc {
                group: &r.group,
                figures: figures(&r.figures, s.seconds()),
            })
            .collect(),
        total: figures(&s.total(), s.seconds()),
    }
}

fn measure_name(m: Measure) -> &'static str {
    match m {
        Measure::Energy => "energy",
        Measure::Operational => "operational",
        Measure::Embodied => "embodied",
        Measure::Cpu => "cpu",
    }
}

fn sci(r: &Report) -> Sci<'_> {
    let t = r.period.total();
    let (measured, modelled) = r.inputs.measured_and_modelled();
    Sci {
        energy_kwh: t.kwh(),
        energy_meaning: render::energy_meaning(r.by),
        energy_series: queries::series(r.by, Measure::Energy),
        operational_gco2e: t.operational_grams,
        operational_series: queries::series(r.by, Measure::Operational),
        embodied_gco2e: t.embodied_grams,
        embodied_series: queries::series(r.by, Measure::Embodied),
        intensity: r
            .inputs
            .intensity
            .iter()
            .map(|i| IntensityDoc {
                source: &i.source,
                zone: &i.zone,
                mean_grams_per_kwh: i.grams_per_kwh,
            })
            .collect(),
        effective_intensity_grams_per_kwh: r.effective_intensity(),
        pue: r.inputs.pue.map(|(min, max)| PueDoc { min, max }),
        power: PowerDoc {
            measured_nodes: measured,
            modelled_nodes: modelled,
            nodes: r
                .inputs
                .sources
                .iter()
                .map(|s| NodeDoc {
                    node: &s.node,
                    source: &s.source,
                    estimated: s.estimated,
                    model: &s.model,
                })
                .collect(),
        },
        missing: r.inputs.missing.iter().map(|m| measure_name(*m)).collect(),
    }
}

pub fn render(r: &Report) -> String {
    let doc = Doc {
        version: VERSION,
        prometheus: &r.prometheus,
        group_by: r.by.as_str(),
        zones: TOTAL_ZONES,
        period: span(&r.period),
        days: r.days.iter().map(span).collect(),
        sci: sci(r),
    };
    let mut out = serde_json::to_string_pretty(&doc).expect("the report serializes");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::report::render::tests::report;

    #[test]
    fn the_document() {
        let d: Value = serde_json::from_str(&render(&report())).unwrap();
        assert_eq!(d["version"], 1);
        assert_eq!(d["group_by"], "namespace");
        assert_eq!(d["period"]["seconds"], 2.0 * 86400.0);
        let a = &d["period"]["groups"][0];
        assert_eq!(a["group"], "team-a");
        assert_eq!(a["energy_kwh"], 3.0);
        assert_eq!(a["avg_power_watts"], 62.5);
        assert_eq!(a["operational_gco2e"], 1200.0);
        assert_eq!(a["embodied_gco2e"], Value::Null);
        assert_eq!(d["period"]["total"]["energy_kwh"], 4.0);
        assert_eq!(d["days"].as_array().unwrap().len(), 2);
        assert_eq!(d["days"][1]["from"], "1970-01-12T00:00:00Z");
        assert_eq!(d["sci"]["effective_intensity_grams_per_kwh"], 300.0);
        assert_eq!(d["sci"]["missing"], serde_json::json!(["embodied"]));
        assert_eq!(d["sci"]["power"]["measured_nodes"], 1);
        assert_eq!(d["zones"], serde_json::json!(["package", "dram"]));
    }
}
