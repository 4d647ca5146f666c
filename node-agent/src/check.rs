//! `wattlet check`: what this node supports and what the agent will use, in plain words.

use std::{fmt::Write as _, path::Path};

use crate::{
    carbon::{self, CarbonArgs},
    config::Options,
    kernel::{KernelCounters, KernelOptions, PmuMode, probe},
    power::{self, Selection, SourceError, SourceKind},
    sys,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, with less than the best (e.g. no PMU).
    Degraded,
    /// The agent cannot run.
    Fail,
}

#[derive(Debug)]
pub struct Item {
    pub what: &'static str,
    pub status: Status,
    pub detail: String,
}

/// One power source as probed on this node.
#[derive(Debug)]
pub struct PowerLine {
    pub kind: SourceKind,
    pub chosen: bool,
    /// What it found, or why it cannot be used.
    pub outcome: Result<String, SourceError>,
}

#[derive(Debug)]
pub struct Report {
    pub items: Vec<Item>,
    /// Every power source, in the order they were considered.
    pub power: Vec<PowerLine>,
    /// Why the chosen power source was chosen (or why none could be).
    pub power_why: String,
    pub will_use: Vec<String>,
}

impl Report {
    pub fn can_run(&self) -> bool {
        self.items.iter().all(|i| i.status != Status::Fail)
    }

    pub fn render(&self) -> String {
        let mut out = String::from("Wattlet node check\n\n");
        for i in &self.items {
            let mark = match i.status {
                Status::Ok => "ok  ",
                Status::Degraded => "warn",
                Status::Fail => "FAIL",
            };
            let _ = writeln!(out, "  [{mark}] {:<12} {}", i.what, i.detail);
        }
        out.push_str("\nPower sources, in the order considered:\n");
        for p in &self.power {
            let (mark, text) = match (&p.outcome, p.chosen) {
                (Ok(found), true) => ("use ", found.clone()),
                (Ok(found), false) => ("ok  ", found.clone()),
                (Err(why), _) => ("no  ", why.to_string()),
            };
            let _ = writeln!(out, "  [{mark}] {:<9} {text}", p.kind.as_str());
        }
        let _ = writeln!(out, "  Choice: {}.", self.power_why);
        out.push('\n');
        if self.can_run() {
            out.push_str("The agent will use:\n");
            for u in &self.will_use {
                let _ = writeln!(out, "  - {u}");
            }
        } else {
            out.push_str("The agent cannot run on this node: fix the FAIL lines above.\n");
        }
        out
    }
}

/// What one check found, and what the agent will use because of it.
type Finding = (Item, Option<String>);

fn item(what: &'static str, status: Status, detail: impl Into<String>) -> Item {
    Item {
        what,
        status,
        detail: detail.into(),
    }
}

pub fn run_checks(opts: &Options) -> Report {
    let btf = Path::new(BTF).exists();
    let privileged = sys::has_bpf_privileges();
    let selection = power::select(&opts.power);
    let findings = [
        (kernel_check(), None),
        (btf_check(btf), None),
        (cgroup_check(opts), None),
        (privileges_check(privileged), None),
        ebpf_check(btf && privileged),
        pmu_check(opts.kernel.pmu),
        power_check(&selection),
        carbon_check(&opts.carbon),
    ];
    let (items, will_use): (Vec<Item>, Vec<Option<String>>) = findings.into_iter().unzip();
    let chosen = selection.chosen.as_ref().map(|o| o.kind);
    let power = selection
        .probes
        .into_iter()
        .map(|p| PowerLine {
            kind: p.kind,
            chosen: Some(p.kind) == chosen,
            outcome: p.outcome,
        })
        .collect();
    Report {
        items,
        power,
        power_why: selection.why,
        will_use: will_use.into_iter().flatten().collect(),
    }
}

const BTF: &str = "/sys/kernel/btf/vmlinux";

fn kernel_check() -> Item {
    match probe::supported_kernel() {
        Ok(release) => item("kernel", Status::Ok, release),
        Err(why) => item("kernel", Status::Fail, why),
    }
}

fn btf_check(btf: bool) -> Item {
    if btf {
        item("BTF", Status::Ok, format!("{BTF} present"))
    } else {
        item(
            "BTF",
            Status::Fail,
            format!("{BTF} missing: use a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
        )
    }
}

fn cgroup_check(opts: &Options) -> Item {
    match opts.agent.cgroup_root() {
        Ok(m) => {
            let hybrid = m != Path::new("/sys/fs/cgroup");
            let layout = if hybrid {
                " (hybrid or non-standard layout)"
            } else {
                ""
            };
            item(
                "cgroup v2",
                Status::Ok,
                format!("mounted at {}{layout}", m.display()),
            )
        }
        Err(e) => item("cgroup v2", Status::Fail, format!("{e:#}")),
    }
}

fn privileges_check(privileged: bool) -> Item {
    match (sys::is_root(), privileged) {
        (true, _) => item("privileges", Status::Ok, "running as root"),
        (false, true) => item(
            "privileges",
            Status::Ok,
            "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) held",
        ),
        (false, false) => item("privileges", Status::Fail, sys::NEEDS_PRIVILEGES),
    }
}

/// Loads and attaches the program once, if it can be tried.
fn ebpf_check(can_try: bool) -> Finding {
    if !can_try {
        let why = "not tried: needs BTF and privileges (see above)";
        return (item("eBPF", Status::Fail, why), None);
    }
    match KernelCounters::load(KernelOptions {
        max_cgroups: 16,
        pmu: PmuMode::Off,
        ..KernelOptions::default()
    }) {
        Ok(_) => (
            item(
                "eBPF",
                Status::Ok,
                "tp_btf/sched_switch program loads and attaches",
            ),
            Some(
                "per-cgroup CPU time and context switches from the eBPF sched_switch program"
                    .into(),
            ),
        ),
        Err(e) => (
            item(
                "eBPF",
                Status::Fail,
                format!("{:#}", anyhow::Error::from(e)),
            ),
            None,
        ),
    }
}

fn pmu_check(mode: PmuMode) -> Finding {
    match (mode, probe::hardware_pmu()) {
        (PmuMode::Off, _) => (
            item("PMU", Status::Degraded, "turned off with --pmu off"),
            None,
        ),
        (_, Ok(())) => (
            item(
                "PMU",
                Status::Ok,
                "hardware cycles and instructions available",
            ),
            Some("cycles and instructions per cgroup from the PMU".into()),
        ),
        (_, Err(why)) => (
            item("PMU", Status::Degraded, why),
            Some("no PMU counters: CPU time alone".into()),
        ),
    }
}

/// Which intensity source is in use, how to set a better one, the PUE and embodied settings.
fn carbon_check(args: &CarbonArgs) -> Finding {
    let c = carbon::check(args);
    let status = if c.ok { Status::Ok } else { Status::Degraded };
    let r = &c.reading;
    let zone = match r.zone_label() {
        "" => String::new(),
        z => format!(" for {z}"),
    };
    (
        item("carbon", status, c.detail),
        Some(format!(
            "grid intensity {} gCO2e/kWh{zone} (source=\"{}\") for emissions",
            r.grams_per_kwh, r.source
        )),
    )
}

fn power_check(selection: &Selection) -> Finding {
    match &selection.chosen {
        Some(o) if o.estimated => (
            item(
                "power",
                Status::Degraded,
                format!(
                    "power is modelled, not measured: no usable sensor (source {}); series carry \
                     estimated=\"true\"",
                    o.kind
                ),
            ),
            Some(format!(
                "modelled node power (estimated, source {}, coefficients {})",
                o.kind,
                o.model_family.as_deref().unwrap_or("?")
            )),
        ),
        Some(o) => (
            item("power", Status::Ok, format!("measured by {}", o.kind)),
            Some(format!("measured node energy from {}", o.kind)),
        ),
        None => (
            item(
                "power",
                Status::Fail,
                format!(
                    "{}: see the power sources below; --power-source model estimates power on \
                     any node",
                    selection.why
                ),
            ),
            None,
        ),
    }
}
