//! `wattlet report`'s flags, and the period they name.

use std::path::PathBuf;

use clap::Args;

use super::time::{self, parse_instant, parse_span};

/// How the report groups what it adds up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// Kubernetes namespaces: the energy attributed to their pods, wherever they ran.
    Namespace,
    /// Pods (`namespace/pod`; pods without a name yet by uid).
    Pod,
    /// Nodes: the whole node's energy, idle and system included.
    Node,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Namespace => "namespace",
            GroupBy::Pod => "pod",
            GroupBy::Node => "node",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// One row per group and period (the whole period, then each day).
    Csv,
    /// Everything, with the SCI inputs, for other tools.
    Json,
    /// One self-contained file (inline CSS and SVG charts, no scripts) to attach to a ticket.
    Html,
}

/// Energy (kWh), operational and embodied emissions (gCO2e), average power and CPU-hours per
/// group over a period, from the Prometheus that scrapes the agents.
#[derive(Args, Clone, Debug, PartialEq)]
#[command(next_help_heading = "Report")]
pub struct ReportArgs {
    /// Prometheus's address (http:// or https://, with its path prefix if any), e.g.
    /// http://prometheus:9090.
    #[arg(long, value_name = "URL")]
    pub prometheus: String,

    /// The period ending at --to (default: now): 30d, 12h, 90m, 2w. The default period is 30d.
    #[arg(long, value_name = "DURATION", value_parser = parse_span, conflicts_with = "from")]
    pub since: Option<i64>,

    /// Start of the period: 2026-11-01 (midnight UTC), 2026-11-01T09:30:00Z, or Unix seconds.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub from: Option<i64>,

    /// End of the period (default: now), in the same forms as --from.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub to: Option<i64>,

    /// Group by namespace, pod or node.
    #[arg(long, value_enum, default_value = "namespace")]
    pub by: GroupBy,

    /// How to write the report.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,

    /// Write the report to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The default period.
pub const DEFAULT_SPAN: i64 = 30 * time::DAY;

impl ReportArgs {
    /// The period, as Unix seconds [from, to); an error names the flags when it is empty.
    pub fn period(&self) -> Result<(i64, i64), String> {
        let to = self.to.unwrap_or_else(time::now);
        let from = match (self.from, self.since) {
            (Some(from), _) => from,
            (None, Some(span)) => to - span,
            (None, None) => to - DEFAULT_SPAN,
        };
        if from >= to {
            return Err(format!(
                "the period is empty: --from {} is not before --to {}",
                time::rfc3339(from),
                time::rfc3339(to)
            ));
        }
        Ok((from, to))
    }
}
