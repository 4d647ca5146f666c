//! `wattlet check`: what this node supports and what the agent will use, in plain words.

use std::{fmt::Write as _, path::Path};

use crate::{
    carbon::{self, CarbonArgs},
    config::Options,
    kernel::{KernelCounters, KernelOptions, PmuMode, probe},
    power::{
        self, PlatformKind, PlatformOpened, Selection, SourceError, SourceKind,
        hwmon::{ChipSurvey, Use},
    },
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

/// The whole-platform meter (`--power.redfish.url`) as opened on this node.
#[derive(Debug)]
pub struct PlatformLine {
    pub kind: PlatformKind,
    /// What it reads and its power now (and whether it answered), or why it cannot be used.
    pub outcome: Result<(String, bool), SourceError>,
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
    /// The whole-platform meter next to the chosen source, if one is configured.
    pub platform: Option<PlatformLine>,
    /// Every hwmon chip and channel seen, and what was made of each.
    pub hwmon: Vec<ChipSurvey>,
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
        if let Some(p) = &self.platform {
            let (mark, text) = match &p.outcome {
                Ok((found, true)) => ("use ", found.clone()),
                Ok((found, false)) => ("warn", found.clone()),
                Err(why) => ("no  ", why.to_string()),
            };
            let _ = writeln!(
                out,
                "  [{mark}] {:<9} platform zone: {text}",
                p.kind.as_str()
            );
        }
        render_hwmon(&mut out, &self.hwmon);
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

/// Every hwmon chip and channel, and what was made of each (none if hwmon has no chips).
fn render_hwmon(out: &mut String, chips: &[ChipSurvey]) {
    if chips.is_empty() {
        return;
    }
    out.push_str("\nhwmon chips and channels, and what was made of each:\n");
    for chip in chips {
        let rule = chip
            .rule
            .as_ref()
            .map(|r| format!(" (pairing rule from {r})"))
            .unwrap_or_default();
        if chip.channels.is_empty() {
            let _ = writeln!(
                out,
                "  {} {}: no energy, power, voltage or current channels",
                chip.hwmon, chip.name
            );
            continue;
        }
        let _ = writeln!(out, "  {} {}{rule}", chip.hwmon, chip.name);
        for d in &chip.channels {
            let label = d
                .channel
                .label
                .as_ref()
                .map(|l| format!(" {l:?}"))
                .unwrap_or_default();
            let name = format!("{}{label}", d.channel);
            let _ = writeln!(out, "    {name:<20} {}", channel_use(&d.what));
        }
    }
}

fn channel_use(u: &Use) -> String {
    match u {
        Use::Energy { zone } => format!("energy counter, zone {zone}"),
        Use::Power { zone, item } => {
            format!("power sensor (_{}), integrated: zone {zone}", item.suffix())
        }
        Use::Voltage {
            current,
            zone,
            item,
            by,
        } => format!(
            "× curr{current} (_{}, paired {by}), integrated: zone {zone}",
            item.suffix()
        ),
        Use::Current { voltage } => format!("× in{voltage} (see there)"),
        Use::Skipped(why) => format!("skipped: {why}"),
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
    let mut findings = vec![
        (kernel_check(), None),
        (btf_check(btf), None),
        (cgroup_check(opts), None),
        (privileges_check(privileged), None),
        ebpf_check(btf && privileged),
        pmu_check(opts.kernel.pmu),
        power_check(&selection),
        carbon_check(&opts.carbon),
    ];
    findings.extend(selection.platform.as_ref().map(platform_check));
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
        platform: selection.platform.map(|p| match p {
            Ok(p) => PlatformLine {
                kind: p.kind,
                outcome: Ok((p.description, p.answered)),
            },
            Err(e) => PlatformLine {
                kind: PlatformKind::Redfish,
                outcome: Err(e),
            },
        }),
        hwmon: power::hwmon::survey(&opts.power.sysfs, &opts.power.chip_rules())
            .unwrap_or_default(),
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

/// The platform meter: used, not answering yet, or unusable (the agent would not start).
fn platform_check(p: &Result<PlatformOpened, SourceError>) -> Finding {
    match p {
        Ok(p) if p.answered => (
            item(
                "platform",
                Status::Ok,
                format!("{}: {}", p.kind, p.description),
            ),
            Some(format!(
                "whole-platform power from the BMC ({}), as the platform zone",
                p.kind
            )),
        ),
        Ok(p) => (
            item(
                "platform",
                Status::Degraded,
                format!("{}: {}", p.kind, p.description),
            ),
            Some(format!(
                "whole-platform power from the BMC ({}) once it answers; the platform zone is \
                 stale until then",
                p.kind
            )),
        ),
        Err(e) => (item("platform", Status::Fail, e.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{fixture::Tree, hwmon::ChipRules};

    fn report(hwmon: Vec<ChipSurvey>, platform: Option<PlatformLine>) -> Report {
        Report {
            items: Vec::new(),
            power: Vec::new(),
            power_why: "model is the first preference".into(),
            platform,
            hwmon,
            will_use: Vec::new(),
        }
    }

    #[test]
    fn every_hwmon_chip_and_channel_is_listed_with_what_was_made_of_it() {
        let t = Tree::new();
        let d = "class/hwmon/hwmon1";
        t.file(&format!("{d}/name"), "ina3221")
            .file(&format!("{d}/in1_label"), "VDD_IN")
            .file(&format!("{d}/in1_input"), "5000")
            .file(&format!("{d}/in2_enable"), "0")
            .file(&format!("{d}/in2_input"), "0")
            .file(&format!("{d}/in4_input"), "120")
            .file(&format!("{d}/curr1_input"), "1000")
            .file(&format!("{d}/curr2_input"), "0");
        t.file("class/hwmon/hwmon0/name", "k10temp")
            .file("class/hwmon/hwmon0/temp1_input", "40000");
        let chips = power::hwmon::survey(t.root(), &ChipRules::new(None)).unwrap();
        let text = report(chips, None).render();
        let expected = "\nhwmon chips and channels, and what was made of each:
  hwmon0 k10temp: no energy, power, voltage or current channels
  hwmon1 ina3221 (pairing rule from the built-in chip table)
    in1 \"VDD_IN\"         × curr1 (_input, paired by the chip table), integrated: zone vdd_in
    in2                  skipped: disabled by the driver (_enable = 0)
    in4                  skipped: a shunt voltage, not a supply (chip table)
    curr1                × in1 (see there)
    curr2                skipped: nothing to pair it with
";
        assert!(text.contains(expected), "{text}");
    }

    #[test]
    fn the_platform_meter_is_listed_with_the_power_sources() {
        let line = |outcome| PlatformLine {
            kind: PlatformKind::Redfish,
            outcome,
        };
        let text = report(
            Vec::new(),
            Some(line(Ok((
                "https://bmc/redfish/v1: system 1 …: 350.0 W now".into(),
                true,
            )))),
        )
        .render();
        assert!(
            text.contains("  [use ] redfish   platform zone: https://bmc/redfish/v1: system 1 …: 350.0 W now\n"),
            "{text}"
        );
        let e = crate::power::redfish::RedfishError::NoSystem("no system on the BMC…".into());
        let text = report(Vec::new(), Some(line(Err(e.into())))).render();
        assert!(
            text.contains("  [no  ] redfish   platform zone: no system on the BMC…\n"),
            "{text}"
        );
    }
}
