//! The registry a scrape renders: build info, and one collector that encodes the latest
//! snapshot family group by family group.

use std::{borrow::Cow, fmt, sync::Arc};

use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::info::Info, registry::Registry,
};

use super::{
    agent, carbon, cpuinfo, families::escape_label_value, kepler, node, processes, vms, workloads,
};
use crate::{config::Compat, snapshot::Latest};

#[derive(Debug)]
struct SnapshotCollector {
    latest: Arc<Latest>,
    compat: Option<Compat>,
    /// The node's name as given, for Kepler's `node_name`.
    node: String,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(s) = self.latest.get() else {
            return Ok(());
        };
        node::encode(&mut enc, &s)?;
        cpuinfo::encode(&mut enc, &s)?;
        workloads::encode(&mut enc, &s)?;
        vms::encode(&mut enc, &s)?;
        processes::encode(&mut enc, &s)?;
        agent::encode(&mut enc, &s)?;
        carbon::encode(&mut enc, &s)?;
        if self.compat == Some(Compat::Kepler) && s.power.is_some() {
            kepler::encode(&mut enc, &s, &self.node)?;
        }
        Ok(())
    }
}

/// Builds the registry: build info, and the snapshot collector; `node` on every series.
pub fn registry(latest: Arc<Latest>, node: &str, compat: Option<Compat>) -> Registry {
    // Constant labels are written as given: escape the node's name here.
    let mut reg = Registry::with_labels(
        [(Cow::Borrowed("node"), Cow::Owned(escape_label_value(node)))].into_iter(),
    );
    reg.register(
        "wattlet_build",
        "Wattlet's version",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    reg.register_collector(Box::new(SnapshotCollector {
        latest,
        compat,
        node: node.to_owned(),
    }));
    reg
}

/// Renders OpenMetrics text.
pub fn render(reg: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, reg)?;
    Ok(out)
}
