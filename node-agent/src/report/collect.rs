//! Fills a [`Report`] from Prometheus: whether the agents' series exist in the period, each
//! figure per group over the period and over each UTC day, and the SCI inputs.

use std::collections::BTreeMap;

use log::debug;

use super::{
    ReportError,
    args::GroupBy,
    model::{Figures, Inputs, Intensity, NodeSource, Report, Span, days, group_name},
    prometheus::Prometheus,
    queries::{self, Measure},
    time::DAY,
};

/// Runs the report's queries for [from, to).
pub async fn collect(
    prom: &Prometheus,
    by: GroupBy,
    from: i64,
    to: i64,
) -> Result<Report, ReportError> {
    let range = to - from;
    if prom
        .query(&queries::any_wattlet(range), to)
        .await?
        .is_empty()
    {
        return Err(ReportError::NoSeries {
            url: prom.url().into(),
            from,
            to,
        });
    }
    let (groups, missing) = period_figures(prom, by, to, range).await?;
    let period = Span::new(from, to, groups, false);
    let order: Vec<String> = period.rows.iter().map(|r| r.group.clone()).collect();
    // A Prometheus that refuses the rules API still answers queries: raw series then.
    let rules = prom.recording_rules().await.unwrap_or_default();
    let mut spans = Vec::new();
    for (start, end) in days(from, to) {
        let span = day(prom, by, (start, end), &rules, &missing).await?;
        spans.push(span.ordered_like(&order));
    }
    Ok(Report {
        prometheus: prom.url().into(),
        by,
        period,
        days: spans,
        inputs: Inputs {
            missing,
            ..inputs(prom, to, range).await?
        },
    })
}

/// Every figure per group over the `range` seconds before `at`, and the figures no series
/// has.
async fn period_figures(
    prom: &Prometheus,
    by: GroupBy,
    at: i64,
    range: i64,
) -> Result<(BTreeMap<String, Figures>, Vec<Measure>), ReportError> {
    let mut groups: BTreeMap<String, Figures> = BTreeMap::new();
    let mut missing = Vec::new();
    for m in Measure::ALL {
        let samples = prom.query(&queries::increase(by, m, range), at).await?;
        if samples.is_empty() {
            missing.push(m);
        }
        add(&mut groups, by, m, samples);
    }
    Ok((groups, missing))
}

/// Adds each series' value to its group (several series can name one group: pods of one name
/// with different uids).
fn add(
    groups: &mut BTreeMap<String, Figures>,
    by: GroupBy,
    m: Measure,
    samples: Vec<super::prometheus::Sample>,
) {
    for (labels, v) in samples {
        let f = groups.entry(group_name(by, &labels)).or_default();
        let before = match m {
            Measure::Energy => Some(f.energy_joules),
            Measure::Cpu => f.cpu_seconds,
            Measure::Operational => f.operational_grams,
            Measure::Embodied => f.embodied_grams,
        };
        f.set(m, before.unwrap_or(0.0) + v);
    }
}

/// One day's (or part of a day's) figures: whole days from the daily recording rules where
/// Prometheus has them, the rest from raw counters.
async fn day(
    prom: &Prometheus,
    by: GroupBy,
    (start, end): (i64, i64),
    rules: &[String],
    missing: &[Measure],
) -> Result<Span, ReportError> {
    let whole = end - start == DAY;
    let mut groups: BTreeMap<String, Figures> = BTreeMap::new();
    let mut from_rules = false;
    for m in Measure::ALL.into_iter().filter(|m| !missing.contains(m)) {
        let rule = queries::daily_rule(by, m).filter(|(r, _)| whole && rules.contains(r));
        let expr = match &rule {
            Some((rule, factor)) => {
                from_rules = true;
                queries::from_daily_rule(by, m, rule, *factor)
            }
            None => queries::increase(by, m, end - start),
        };
        debug!("{expr} at {end}");
        let samples = prom.query(&expr, end).await?;
        add(&mut groups, by, m, samples);
    }
    Ok(Span::new(start, end, groups, from_rules))
}

/// The SCI inputs beside the figures: grid intensity, PUE, power sources.
async fn inputs(prom: &Prometheus, at: i64, range: i64) -> Result<Inputs, ReportError> {
    let label = |l: &BTreeMap<String, String>, k: &str| l.get(k).cloned().unwrap_or_default();
    let intensity = prom
        .query(&queries::intensity(range), at)
        .await?
        .into_iter()
        .map(|(l, v)| Intensity {
            source: label(&l, "source"),
            zone: label(&l, "zone"),
            grams_per_kwh: v,
        })
        .collect();
    let pue = prom.query(&queries::pue(range), at).await?;
    let pue = pue.iter().map(|(_, v)| *v).fold(None, |acc, v| {
        let (lo, hi): (f64, f64) = acc.unwrap_or((v, v));
        Some((lo.min(v), hi.max(v)))
    });
    let sources = prom
        .query(&queries::power_sources(range), at)
        .await?
        .into_iter()
        .map(|(l, _)| NodeSource {
            node: label(&l, "node"),
            source: label(&l, "source"),
            estimated: label(&l, "estimated") == "true",
            model: label(&l, "model"),
        })
        .collect();
    Ok(Inputs {
        intensity,
        pue,
        sources,
        missing: Vec::new(),
    })
}
