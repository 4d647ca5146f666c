//! Choosing the source: every one probed (for `wattlet check`), the forced one or else the first
//! preferred one that works here chosen, and why.

use super::{
    Opened, PlatformOpened, PowerOptions, SourceError, SourceKind, hwmon, model, perf, powercap,
    redfish,
};

/// One kind of source: its name and how to open it.
pub(crate) struct Source {
    kind: SourceKind,
    pub(crate) name: &'static str,
    open: fn(&PowerOptions) -> Result<Opened, SourceError>,
}

/// Every source. Adding one is a variant of [`SourceKind`] and a row here.
const SOURCES: &[Source] = &[
    Source {
        kind: SourceKind::Perf,
        name: "perf",
        open: |o| Ok(perf::open(&o.sysfs, o.ceiling_watts)?),
    },
    Source {
        kind: SourceKind::Powercap,
        name: "powercap",
        open: |o| Ok(powercap::open(&o.sysfs, o.ceiling_watts)?),
    },
    Source {
        kind: SourceKind::Hwmon,
        name: "hwmon",
        open: |o| Ok(hwmon::open(&o.sysfs, o.ceiling_watts, &o.chip_rules())?),
    },
    Source {
        kind: SourceKind::Model,
        name: "model",
        open: |o| Ok(model::open(&o.procfs, &o.model)?),
    },
];

pub(crate) fn source(kind: SourceKind) -> &'static Source {
    SOURCES
        .iter()
        .find(|s| s.kind == kind)
        .expect("every SourceKind has a row in SOURCES")
}

/// Opens one source.
pub fn open(kind: SourceKind, opts: &PowerOptions) -> Result<Opened, SourceError> {
    (source(kind).open)(opts)
}

/// What probing one source found.
#[derive(Debug)]
pub struct Probe {
    pub kind: SourceKind,
    /// What it found, or why it cannot be used here.
    pub outcome: Result<String, SourceError>,
}

/// Every source probed, and the one chosen with the reason.
#[derive(Debug)]
pub struct Selection {
    pub probes: Vec<Probe>,
    pub chosen: Option<Opened>,
    /// Why the chosen source was chosen, or why none was.
    pub why: String,
    /// The whole-platform meter next to it (`--power.redfish.url`), if one is configured.
    pub platform: Option<Result<PlatformOpened, SourceError>>,
}

/// Probes every source (the preferred ones in order, then the rest, for `wattlet check`) and
/// chooses the forced source, or else the first preferred one that works.
pub fn select(opts: &PowerOptions) -> Selection {
    let mut order: Vec<SourceKind> = Vec::new();
    for k in opts
        .forced
        .iter()
        .chain(&opts.preference)
        .chain(SourceKind::all())
    {
        if !order.contains(k) {
            order.push(*k);
        }
    }
    let mut probes = Vec::new();
    let mut chosen: Option<Opened> = None;
    for kind in order {
        let eligible = match opts.forced {
            Some(f) => f == kind,
            None => opts.preference.contains(&kind),
        };
        match open(kind, opts) {
            Ok(o) => {
                probes.push(Probe {
                    kind,
                    outcome: Ok(o.description.clone()),
                });
                if eligible && chosen.is_none() {
                    chosen = Some(o);
                }
            }
            Err(why) => probes.push(Probe {
                kind,
                outcome: Err(why),
            }),
        }
    }
    let why = why_chosen(opts, chosen.as_ref().map(|o| o.kind));
    Selection {
        probes,
        chosen,
        why,
        platform: open_platform(opts),
    }
}

/// Opens the whole-platform meter, if one is configured.
pub fn open_platform(opts: &PowerOptions) -> Option<Result<PlatformOpened, SourceError>> {
    opts.redfish.url.as_ref()?;
    Some(redfish::open(&opts.redfish, &opts.sysfs, opts.ceiling_watts).map_err(SourceError::from))
}

/// Why `chosen` was chosen, or why none was, in the flags' words.
fn why_chosen(opts: &PowerOptions, chosen: Option<SourceKind>) -> String {
    let names = |ks: &[SourceKind]| ks.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
    match (chosen, opts.forced) {
        (Some(c), Some(_)) => format!("{c} was forced with --power-source"),
        (None, Some(f)) => format!("{f} was forced with --power-source and cannot be used here"),
        (Some(c), None) => {
            let skipped: Vec<SourceKind> = opts
                .preference
                .iter()
                .copied()
                .take_while(|k| *k != c)
                .collect();
            if skipped.is_empty() {
                format!("{c} is the first preference (--power.sources)")
            } else {
                format!(
                    "{c} is the first of --power.sources that works here ({} cannot be used)",
                    names(&skipped)
                )
            }
        }
        (None, None) => format!(
            "none of --power.sources ({}) can be used here",
            names(&opts.preference)
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::ValueEnum as _;

    use super::*;
    use crate::power::fixture::Tree;

    fn powercap_tree() -> Tree {
        let t = Tree::new();
        t.file("class/powercap/intel-rapl:0/name", "package-0")
            .file("class/powercap/intel-rapl:0/energy_uj", "1")
            .file(
                "class/powercap/intel-rapl:0/max_energy_range_uj",
                "262143328850",
            );
        t
    }

    fn opts(sysfs: &Path) -> PowerOptions {
        PowerOptions {
            sysfs: sysfs.to_owned(),
            ..PowerOptions::default()
        }
    }

    #[test]
    fn every_kind_has_one_row_named_as_on_the_command_line() {
        for kind in SourceKind::all() {
            assert_eq!(SOURCES.iter().filter(|s| s.kind == *kind).count(), 1);
            let flag = kind.to_possible_value().unwrap();
            assert_eq!(kind.as_str(), flag.get_name());
        }
        assert_eq!(SOURCES.len(), SourceKind::all().len());
        assert_eq!(
            PowerOptions::default().preference,
            [
                SourceKind::Perf,
                SourceKind::Powercap,
                SourceKind::Hwmon,
                SourceKind::Model
            ]
        );
    }

    #[test]
    fn first_working_preference_is_chosen() {
        let t = powercap_tree();
        let s = select(&opts(t.root()));
        assert_eq!(s.chosen.as_ref().unwrap().kind, SourceKind::Powercap);
        assert_eq!(
            s.why,
            "powercap is the first of --power.sources that works here (perf cannot be used)"
        );
        let kinds: Vec<_> = s
            .probes
            .iter()
            .map(|p| (p.kind, p.outcome.is_ok()))
            .collect();
        assert_eq!(
            kinds,
            [
                (SourceKind::Perf, false),
                (SourceKind::Powercap, true),
                (SourceKind::Hwmon, false),
                (SourceKind::Model, true)
            ]
        );
    }

    #[test]
    fn no_sensor_falls_back_to_the_model() {
        let t = Tree::new();
        let s = select(&opts(t.root()));
        let chosen = s.chosen.unwrap();
        assert_eq!(chosen.kind, SourceKind::Model);
        assert!(chosen.estimated);
        assert!(
            s.why.contains("(perf, powercap, hwmon cannot be used)"),
            "{}",
            s.why
        );
    }

    #[test]
    fn forced_and_restricted() {
        let t = powercap_tree();
        let forced = PowerOptions {
            forced: Some(SourceKind::Model),
            ..opts(t.root())
        };
        let s = select(&forced);
        assert_eq!(s.chosen.unwrap().kind, SourceKind::Model);
        assert_eq!(s.why, "model was forced with --power-source");
        assert_eq!(s.probes[0].kind, SourceKind::Model);

        let forced = PowerOptions {
            forced: Some(SourceKind::Hwmon),
            ..opts(t.root())
        };
        let s = select(&forced);
        assert!(s.chosen.is_none());
        assert!(s.why.contains("hwmon was forced"));

        let only = PowerOptions {
            preference: vec![SourceKind::Perf, SourceKind::Hwmon],
            ..opts(t.root())
        };
        let s = select(&only);
        assert!(s.chosen.is_none());
        assert_eq!(
            s.why,
            "none of --power.sources (perf, hwmon) can be used here"
        );
        assert_eq!(
            s.probes.len(),
            4,
            "every source is still probed for the report"
        );
    }
}
