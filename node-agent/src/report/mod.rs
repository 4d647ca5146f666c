//! `wattlet report`: energy (kWh), operational and embodied emissions (gCO2e), average power
//! and CPU-hours per namespace, pod or node over a period, with a per-day breakdown and the
//! inputs of the Software Carbon Intensity stated — from the Prometheus that scrapes the agents,
//! so that nobody has to write PromQL to answer "how much did each team use last month?".
//!
//! - `args`: the flags ([`ReportArgs`]) and the period they name;
//! - `queries`: every PromQL expression, and the series each figure comes from;
//! - `prometheus`: the HTTP API client and its errors;
//! - `collect`: the queries run into a `model::Report`, the pure figures and their arithmetic;
//! - `render` (table, CSV), `json`, `html`: the formats.
//! - `time`: UTC dates, RFC 3339 and durations, without a calendar crate.

mod args;
mod collect;
mod html;
mod json;
mod model;
pub(crate) mod prometheus;
mod queries;
mod render;
mod time;

use std::path::PathBuf;

pub use args::{Format, GroupBy, ReportArgs};
pub use prometheus::PromError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("{0}")]
    Period(String),
    #[error(transparent)]
    Prometheus(#[from] PromError),
    #[error(
        "no Wattlet series between {} and {} in the Prometheus at {url}: is it scraping the \
         agents (a job with their :9959/metrics), and were they running then? \
         (wattlet_node_energy_joules_total has no samples in the period)",
        time::rfc3339(*from),
        time::rfc3339(*to)
    )]
    NoSeries { url: String, from: i64, to: i64 },
    #[error("writing the report to {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Queries Prometheus for the period and writes the report where `--output` says (standard
/// output by default).
pub async fn run(args: ReportArgs) -> Result<(), ReportError> {
    let (from, to) = args.period().map_err(ReportError::Period)?;
    let prom = prometheus::Prometheus::new(&args.prometheus)?;
    let report = collect::collect(&prom, args.by, from, to).await?;
    let text = render::render(&report, args.format);
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        }),
        None => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|source| ReportError::Write {
                    path: "standard output".into(),
                    source,
                })
        }
    }
}
