//! The Prometheus exporter: encodes the latest [`Snapshot`](crate::snapshot::Snapshot) at
//! scrape time. A scrape never measures and never waits on measurement.
//!
//! - [`registry`] and [`render`] (`collector`): build info, and the collector that hands the
//!   snapshot to each family group in turn:
//!   - `node`: CPU time, energy and power per zone, idle power, the power source;
//!   - `cpuinfo`: the logical CPUs and how busy they were;
//!   - `workloads`: containers, pods, non-container cgroups, expired energy;
//!   - `vms`: virtual machines;
//!   - `processes`: the top processes by energy and `(other)`;
//!   - `agent`: the agent about itself (pod-metadata watch, its CPU and energy, attribution
//!     settings, the in-kernel map, its last interval);
//!   - `carbon`: the grid intensity in force, the PUE, the intensity sources' failures, and
//!     operational and embodied emissions per node, container, pod and cgroup;
//!   - `kepler`: Kepler's names, with `--metrics-compat kepler`.
//! - `families`: counter and gauge families, label-value escaping.
//! - [`openmetrics_to_text_004`] (`classic`): the classic text format for non-OpenMetrics
//!   scrapers.
//! - [`bind`] and [`serve`] (`http`): `/metrics` with content negotiation, `/healthz`,
//!   `/readyz`, behind [`web`]'s guard;
//! - `page`: the page at `/` (HTML, CSS and JavaScript embedded from `page/`) and the JSON API
//!   it reads, `/api/v1/snapshot` and `/api/v1/history`, whose documents `json` defines.
//! - [`web`]: `--web.config.file` (TLS, basic authentication, headers), connection limits and
//!   timeouts, the accept loop.
//!
//! What users scrape is pinned by `testdata/exposition.om.txt` and `testdata/exposition.txt`
//! (the golden test); a change to them is a change to what dashboards see.

mod agent;
mod carbon;
mod classic;
mod collector;
mod cpuinfo;
mod families;
#[cfg(test)]
mod golden;
mod http;
mod json;
mod kepler;
mod node;
mod page;
mod processes;
mod vms;
pub mod web;
mod workloads;

pub use classic::openmetrics_to_text_004;
pub use collector::{registry, render};
pub use families::escape_label_value;
pub use http::{HttpError, OPENMETRICS, TEXT_004, bind, serve};
pub use json::VERSION as API_VERSION;
pub use web::{Web, WebConfigError};
