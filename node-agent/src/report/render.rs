//! The report's formats, and what they share: how numbers are shown (n/a where the agents export
//! no such series, never 0), the columns, and the SCI inputs stated in words.

use super::{
    args::{Format, GroupBy},
    html, json,
    model::{Report, Row, Span},
    queries::Measure,
    time,
};

/// The report in `format`.
pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Table => table(r),
        Format::Csv => csv(r),
        Format::Json => json::render(r),
        Format::Html => html::render(r),
    }
}

/// About four significant digits, no exponent; whole numbers from 1000 up, with thousands
/// separated (`522,690`).
pub fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 12) as usize;
    let text = format!("{x:.decimals$}");
    if decimals > 0 {
        return text;
    }
    let (sign, digits) = text.split_at(usize::from(text.starts_with('-')));
    let mut grouped = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    grouped
}

pub const NA: &str = "n/a";

pub fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| NA.into(), num)
}

/// The columns after the group's.
pub const COLUMNS: [&str; 5] = [
    "energy (kWh)",
    "avg power (W)",
    "CPU-hours",
    "operational (gCO2e)",
    "embodied (gCO2e)",
];

/// A row's cells: the group, then [`COLUMNS`].
pub fn cells(row: &Row, seconds: f64) -> Vec<String> {
    let f = &row.figures;
    vec![
        row.group.clone(),
        num(f.kwh()),
        num(f.avg_watts(seconds)),
        opt(f.cpu_hours()),
        opt(f.operational_grams),
        opt(f.embodied_grams),
    ]
}

/// The span's rows and its total.
pub fn span_cells(span: &Span) -> Vec<Vec<String>> {
    let total = Row {
        group: "total".into(),
        figures: span.total(),
    };
    span.rows
        .iter()
        .chain(std::iter::once(&total))
        .map(|r| cells(r, span.seconds()))
        .collect()
}

/// What E is, for a grouping.
pub fn energy_meaning(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Node => "the nodes' energy, idle included",
        GroupBy::Namespace | GroupBy::Pod => {
            "the energy the agents attributed to pods (under the default idle policy the nodes' \
             idle energy stays with the nodes)"
        }
    }
}

/// The SCI inputs, each as (symbol, name, statement).
pub fn sci(r: &Report) -> Vec<(&'static str, &'static str, String)> {
    let t = r.period.total();
    let missing = |m: Measure| r.inputs.missing.contains(&m);
    let series = |m: Measure| super::queries::series(r.by, m);
    let e = format!(
        "{} kWh: {}, zones package + dram (core and uncore are part of package)",
        num(t.kwh()),
        energy_meaning(r.by)
    );
    let i = if r.inputs.intensity.is_empty() {
        "n/a: no wattlet_grid_carbon_intensity_grams_per_kwh in the period".to_owned()
    } else {
        let each: Vec<String> = r
            .inputs
            .intensity
            .iter()
            .map(|i| {
                // A grid zone only where the source names one (the default has none).
                let zone = if i.zone.is_empty() {
                    String::new()
                } else {
                    format!(", {}", i.zone)
                };
                format!("{} g/kWh ({}{zone})", num(i.grams_per_kwh), i.source)
            })
            .collect();
        let effective = r
            .effective_intensity()
            .map(|e| format!("; O ÷ E = {} g/kWh (I × PUE, weighted by energy)", num(e)))
            .unwrap_or_default();
        format!("mean {}{effective}", each.join(", "))
    };
    let o = if missing(Measure::Operational) {
        format!("n/a: no {} in the period", series(Measure::Operational))
    } else {
        format!(
            "{} gCO2e, counted by the agents each interval as energy × the intensity in force \
             then × PUE ({})",
            opt(t.operational_grams),
            series(Measure::Operational)
        )
    };
    let m = if missing(Measure::Embodied) {
        format!("n/a: no {} in the period", series(Measure::Embodied))
    } else {
        format!(
            "{} gCO2e ({})",
            opt(t.embodied_grams),
            series(Measure::Embodied)
        )
    };
    let pue = match r.inputs.pue {
        None => "n/a: no wattlet_carbon_pue in the period".to_owned(),
        Some((lo, hi)) if (hi - lo).abs() < 1e-9 => num(lo),
        Some((lo, hi)) => format!("{}–{} (per node)", num(lo), num(hi)),
    };
    let (measured, modelled) = r.inputs.measured_and_modelled();
    let nodes = |n: usize| format!("{n} node{}", if n == 1 { "" } else { "s" });
    let mut power = format!("measured on {}", nodes(measured));
    if measured > 0 {
        power += &format!(": {}", r.inputs.source_summary(false));
    }
    power += &format!("; modelled on {}", nodes(modelled));
    if modelled > 0 {
        power += &format!(": {}", r.inputs.source_summary(true));
    }
    vec![
        ("E", "energy", e),
        ("I", "grid intensity", i),
        ("O", "operational", o),
        ("M", "embodied", m),
        ("", "PUE", pue),
        (
            "R",
            "functional unit",
            format!("one {} over the period", r.by.as_str()),
        ),
        ("", "power", power),
    ]
}

/// `2026-10-23T00:00:00Z to 2026-11-22T00:00:00Z (30 days)`.
pub fn period(span: &Span) -> String {
    format!(
        "{} to {} ({})",
        time::rfc3339(span.from),
        time::rfc3339(span.to),
        time::span(span.to - span.from)
    )
}

/// Columns padded to their widest cell; the first `left` left-aligned (names), the rest
/// right-aligned (numbers).
fn aligned(left: usize, header: &[String], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        std::iter::once(header)
            .chain(rows.iter().map(Vec::as_slice))
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |r: &[String]| {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < left {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        cells.join("  ").trim_end().to_owned() + "\n"
    };
    std::iter::once(line(header))
        .chain(rows.iter().map(|r| line(r)))
        .collect()
}

fn header(first: &str) -> Vec<String> {
    std::iter::once(first.to_owned())
        .chain(COLUMNS.iter().map(|c| c.to_string()))
        .collect()
}

fn table(r: &Report) -> String {
    let mut out = format!(
        "Wattlet report: energy and emissions by {}\nPeriod      {}\nPrometheus  {}\n\n",
        r.by.as_str(),
        period(&r.period),
        r.prometheus
    );
    out += &aligned(1, &header(r.by.as_str()), &span_cells(&r.period));
    out += "\nSCI inputs (Software Carbon Intensity: SCI = (E × I + M) per R; O = E × I)\n";
    for (symbol, name, text) in sci(r) {
        out += &format!("  {symbol:<2} {name:<16} {text}\n");
    }
    out += "\nPer day (UTC";
    if r.days.iter().any(|d| d.from_rules) {
        out += "; whole days from the recording rules";
    }
    out += ")\n";
    let mut rows = Vec::new();
    for d in &r.days {
        for cells in span_cells(d) {
            rows.push(std::iter::once(time::date(d.from)).chain(cells).collect());
        }
    }
    let mut head = vec!["day".to_owned()];
    head.extend(header(r.by.as_str()));
    out + &aligned(2, &head, &rows)
}

/// A CSV field, quoted when it must be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One row per group (and a `total` row) for the whole period (`day` = `period`), then for each
/// UTC day. Numbers unrounded; n/a where there are no series.
fn csv(r: &Report) -> String {
    let mut out = String::from(
        "day,from,to,group_by,group,energy_kwh,avg_power_watts,cpu_hours,operational_gco2e,embodied_gco2e\n",
    );
    let spans = std::iter::once(("period".to_owned(), &r.period))
        .chain(r.days.iter().map(|d| (time::date(d.from), d)));
    for (day, span) in spans {
        let total = Row {
            group: "total".into(),
            figures: span.total(),
        };
        for row in span.rows.iter().chain(std::iter::once(&total)) {
            let f = &row.figures;
            let o = |x: Option<f64>| x.map_or_else(|| NA.to_owned(), |v| v.to_string());
            let cells = [
                day.clone(),
                time::rfc3339(span.from),
                time::rfc3339(span.to),
                r.by.as_str().to_owned(),
                row.group.clone(),
                f.kwh().to_string(),
                f.avg_watts(span.seconds()).to_string(),
                o(f.cpu_hours()),
                o(f.operational_grams),
                o(f.embodied_grams),
            ];
            let cells: Vec<String> = cells.iter().map(|c| field(c)).collect();
            out += &cells.join(",");
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::model::{Figures, Inputs, NodeSource};

    /// Two namespaces over two days; emissions only where the carbon layer counted them.
    pub fn report() -> Report {
        let f = |kwh: f64, cpu_h: f64, o: Option<f64>| Figures {
            energy_joules: kwh * 3.6e6,
            cpu_seconds: Some(cpu_h * 3600.0),
            operational_grams: o,
            embodied_grams: None,
        };
        let span = |from, to, a: Figures, b: Figures| {
            Span::new(
                from,
                to,
                BTreeMap::from([("team-a".to_owned(), a), ("team,b".to_owned(), b)]),
                false,
            )
        };
        let day = time::DAY;
        Report {
            prometheus: "http://prometheus:9090".into(),
            by: GroupBy::Namespace,
            period: span(
                10 * day,
                12 * day,
                f(3.0, 30.0, Some(1200.0)),
                f(1.0, 10.0, None),
            ),
            days: vec![
                span(
                    10 * day,
                    11 * day,
                    f(1.0, 10.0, Some(400.0)),
                    f(0.5, 5.0, None),
                ),
                span(
                    11 * day,
                    12 * day,
                    f(2.0, 20.0, Some(800.0)),
                    f(0.5, 5.0, None),
                ),
            ],
            inputs: Inputs {
                sources: vec![NodeSource {
                    node: "n1".into(),
                    source: "powercap".into(),
                    estimated: false,
                    model: String::new(),
                }],
                missing: vec![Measure::Embodied],
                ..Inputs::default()
            },
        }
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(num(12.345_6), "12.35");
        assert_eq!(num(0.000_012_345_6), "0.00001235");
        assert_eq!(num(123_456.7), "123,457");
        assert_eq!(num(-1234.0), "-1,234");
        assert_eq!(num(999.94), "999.9");
        assert_eq!(num(0.0), "0");
        assert_eq!(opt(None), "n/a");
    }

    #[test]
    fn the_table() {
        let t = table(&report());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[1],
            "Period      1970-01-11T00:00:00Z to 1970-01-13T00:00:00Z (2 days)"
        );
        // 3 kWh over 2 days: 62.5 W.
        let a = lines.iter().find(|l| l.starts_with("team-a")).unwrap();
        let cells: Vec<&str> = a.split_whitespace().collect();
        assert_eq!(cells, ["team-a", "3.000", "62.50", "30.00", "1,200", "n/a"]);
        let total = lines.iter().find(|l| l.starts_with("total")).unwrap();
        let cells: Vec<&str> = total.split_whitespace().collect();
        assert_eq!(cells, ["total", "4.000", "83.33", "40.00", "1,200", "n/a"]);
        assert!(
            t.contains("measured on 1 node: powercap; modelled on 0 nodes"),
            "{t}"
        );
        assert!(t.contains("O ÷ E") || t.contains("n/a: no wattlet_grid_carbon_intensity"));
        assert!(t.contains("1970-01-12  team-a"), "{t}");
    }

    #[test]
    fn the_csv() {
        let c = csv(&report());
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 1 + 3 * 3);
        assert_eq!(
            lines[1],
            "period,1970-01-11T00:00:00Z,1970-01-13T00:00:00Z,namespace,team-a,3,62.5,30,1200,n/a"
        );
        // A comma in a name is quoted.
        assert!(lines[2].contains(",\"team,b\",1,"), "{}", lines[2]);
        assert!(lines[3].starts_with("period,") && lines[3].contains(",total,4,"));
        assert!(lines[4].starts_with("1970-01-11,"));
    }
}
