//! The PMU counters the program reads: one perf event per online CPU, or none at all.

use std::{io, os::fd::OwnedFd};

use aya::util::online_cpus;

use super::{KernelError, PmuCounters, PmuMode, probe};
use crate::sys;

/// Per online CPU, the counter events to put into the program's perf event arrays.
#[derive(Default)]
pub(crate) struct PerfEvents {
    pub cycles: Vec<(u32, OwnedFd)>,
    pub instructions: Vec<(u32, OwnedFd)>,
}

/// The events opened, which counters they are, and why.
pub(crate) struct OpenedPmu {
    pub events: PerfEvents,
    pub counters: PmuCounters,
    pub reason: String,
}

/// Opens one counter per online CPU, or none at all (a counter on only some CPUs would skew
/// attribution).
pub(crate) fn open_pmu(mode: PmuMode) -> Result<OpenedPmu, KernelError> {
    let opened = |events, counters, reason: &str| OpenedPmu {
        events,
        counters,
        reason: reason.into(),
    };
    if mode == PmuMode::Off {
        return Ok(opened(
            PerfEvents::default(),
            PmuCounters::None,
            "PMU counters turned off (--pmu off)",
        ));
    }
    let cpus = online_cpus().map_err(|(path, source)| KernelError::CpuList { path, source })?;
    let open_all = |type_, config| -> io::Result<Vec<(u32, OwnedFd)>> {
        cpus.iter()
            .map(|&cpu| sys::perf_event_open_cpu(type_, config, cpu).map(|fd| (cpu, fd)))
            .collect()
    };
    if mode == PmuMode::SoftwareStandIn {
        let cycles = open_all(sys::PERF_TYPE_SOFTWARE, sys::PERF_COUNT_SW_CPU_CLOCK)
            .map_err(KernelError::StandIn)?;
        return Ok(opened(
            PerfEvents {
                cycles,
                instructions: Vec::new(),
            },
            PmuCounters::SoftwareStandIn,
            "software cpu-clock event standing in for cycles (test mode)",
        ));
    }
    match (
        open_all(sys::PERF_TYPE_HARDWARE, sys::PERF_COUNT_HW_CPU_CYCLES),
        open_all(sys::PERF_TYPE_HARDWARE, sys::PERF_COUNT_HW_INSTRUCTIONS),
    ) {
        (Ok(cycles), Ok(instructions)) => Ok(opened(
            PerfEvents {
                cycles,
                instructions,
            },
            PmuCounters::Hardware,
            "hardware cycles and instructions per cgroup",
        )),
        (Err(e), _) | (_, Err(e)) => Ok(OpenedPmu {
            events: PerfEvents::default(),
            counters: PmuCounters::None,
            reason: format!(
                "no usable hardware PMU ({}): cycles and instructions are not counted; \
                 attribution uses CPU time",
                probe::describe_perf_error(&e)
            ),
        }),
    }
}
