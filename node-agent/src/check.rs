//! `wattlet check`: what this node supports and what the agent will use, in plain words.

use std::{fmt::Write as _, path::Path};

use crate::{
    config::Options,
    kernel::{KernelCounters, KernelOptions, PmuMode, probe},
    power::{self, SourceKind},
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
    pub outcome: Result<String, String>,
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
                (Ok(found), true) => ("use ", found.as_str()),
                (Ok(found), false) => ("ok  ", found.as_str()),
                (Err(why), _) => ("no  ", why.as_str()),
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

pub fn run_checks(opts: &Options) -> Report {
    let mut items = Vec::new();
    let mut will_use = Vec::new();

    let (status, detail) = match probe::supported_kernel() {
        Ok(release) => (Status::Ok, release),
        Err(why) => (Status::Fail, why),
    };
    items.push(Item {
        what: "kernel",
        status,
        detail,
    });

    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    items.push(Item {
        what: "BTF",
        status: if btf { Status::Ok } else { Status::Fail },
        detail: if btf {
            "/sys/kernel/btf/vmlinux present".into()
        } else {
            "/sys/kernel/btf/vmlinux missing: use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
                .into()
        },
    });

    match opts.cgroup_root() {
        Ok(m) => {
            let hybrid = m != Path::new("/sys/fs/cgroup");
            items.push(Item {
                what: "cgroup v2",
                status: Status::Ok,
                detail: format!(
                    "mounted at {}{}",
                    m.display(),
                    if hybrid {
                        " (hybrid or non-standard layout)"
                    } else {
                        ""
                    }
                ),
            });
        }
        Err(e) => items.push(Item {
            what: "cgroup v2",
            status: Status::Fail,
            detail: format!("{e:#}"),
        }),
    }

    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let privileged = probe::has_bpf_privileges();
    items.push(Item {
        what: "privileges",
        status: if privileged { Status::Ok } else { Status::Fail },
        detail: match (root, privileged) {
            (true, _) => "running as root".into(),
            (false, true) => "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) held".into(),
            (false, false) => "not root and missing CAP_BPF/CAP_PERFMON: run with sudo, or \
                               `setcap cap_bpf,cap_perfmon+ep wattlet`"
                .into(),
        },
    });

    if btf && privileged {
        match KernelCounters::load(KernelOptions {
            max_cgroups: 16,
            pmu: PmuMode::Off,
            ..KernelOptions::default()
        }) {
            Ok(_) => {
                items.push(Item {
                    what: "eBPF",
                    status: Status::Ok,
                    detail: "tp_btf/sched_switch program loads and attaches".into(),
                });
                will_use.push(
                    "per-cgroup CPU time and context switches from the eBPF sched_switch program"
                        .into(),
                );
            }
            Err(e) => items.push(Item {
                what: "eBPF",
                status: Status::Fail,
                detail: format!("{:#}", anyhow::Error::from(e)),
            }),
        }
    } else {
        items.push(Item {
            what: "eBPF",
            status: Status::Fail,
            detail: "not tried: needs BTF and privileges (see above)".into(),
        });
    }

    match (opts.pmu, probe::hardware_pmu()) {
        (PmuMode::Off, _) => items.push(Item {
            what: "PMU",
            status: Status::Degraded,
            detail: "turned off with --pmu off".into(),
        }),
        (_, Ok(())) => {
            items.push(Item {
                what: "PMU",
                status: Status::Ok,
                detail: "hardware cycles and instructions available".into(),
            });
            will_use.push("cycles and instructions per cgroup from the PMU".into());
        }
        (_, Err(why)) => {
            items.push(Item {
                what: "PMU",
                status: Status::Degraded,
                detail: why,
            });
            will_use.push("no PMU counters: CPU time alone".into());
        }
    }

    let selection = power::select(&opts.power_options());
    match &selection.chosen {
        Some(o) if o.estimated => {
            items.push(Item {
                what: "power",
                status: Status::Degraded,
                detail: format!(
                    "power is modelled, not measured: no usable sensor (source {}); series carry \
                     estimated=\"true\"",
                    o.kind
                ),
            });
            will_use.push(format!(
                "modelled node power (estimated, source {}, coefficients {})",
                o.kind,
                o.model_family.as_deref().unwrap_or("?")
            ));
        }
        Some(o) => {
            items.push(Item {
                what: "power",
                status: Status::Ok,
                detail: format!("measured by {}", o.kind),
            });
            will_use.push(format!("measured node energy from {}", o.kind));
        }
        None => items.push(Item {
            what: "power",
            status: Status::Fail,
            detail: format!(
                "{}: see the power sources below; --power-source model estimates power on any node",
                selection.why
            ),
        }),
    }
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
        will_use,
    }
}
