//! What each channel of a chip becomes, and why: pure, from the channels sysfs shows and the
//! chip's rule.
//!
//! Per channel, energy is preferred, then power, then voltage × current. A power sensor is the
//! same channel as an energy counter, and a voltage × current pair the same channel as either,
//! when both are labelled and name the same zone, or else when they share the index (the pair's
//! current's). Voltages and currents are paired by matching labels first (equal, or PMBus's
//! `vX` with `iX`), then by the chip table's pairs, then by index (unless both are labelled
//! differently, or the table says not to).

use std::fmt;

use super::{
    channels::{Channel, Chip, Item, Kind},
    chips::Rule,
    source::zone_for,
};

/// How a voltage and a current were found to belong together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairedBy {
    Label,
    Table,
    Index,
}

impl fmt::Display for PairedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PairedBy::Label => "by label",
            PairedBy::Table => "by the chip table",
            PairedBy::Index => "by index",
        })
    }
}

/// Why a channel is not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `<channel>_enable` is 0.
    Disabled,
    /// A shunt voltage (the chip table).
    Shunt,
    /// Not a supply's voltage or current (the chip table).
    NotSupply,
    /// One phase of a PMBus regulator's output current (`ioutY.Z`), part of `ioutY`.
    Phase,
    /// Nothing to pair this voltage or current with.
    NoPair,
    /// A voltage on a chip that reports no current at all (a super-I/O's rails).
    NoCurrents,
    /// The chip measures this channel's energy or power itself, in the named channel.
    Covered { by: String },
    /// Paired, but one side has only `_input` and the other only `_average`.
    NoMatchingReading { with: String },
    /// Its file could not be read when the source was opened.
    Unreadable(String),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Disabled => f.write_str("disabled by the driver (_enable = 0)"),
            Skip::Shunt => f.write_str("a shunt voltage, not a supply (chip table)"),
            Skip::NotSupply => f.write_str("no supply rail (chip table)"),
            Skip::Phase => f.write_str("one phase of a regulator's output current"),
            Skip::NoPair => f.write_str("nothing to pair it with"),
            Skip::NoCurrents => {
                f.write_str("the chip reports no current: a voltage alone gives no power")
            }
            Skip::Covered { by } => write!(f, "the chip measures it as {by}"),
            Skip::NoMatchingReading { with } => write!(
                f,
                "paired with {with}, but one has only _input and the other only _average"
            ),
            Skip::Unreadable(why) => write!(f, "unreadable: {why}"),
        }
    }
}

/// What one channel became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Use {
    Energy {
        zone: String,
    },
    Power {
        zone: String,
        item: Item,
    },
    /// This voltage × `current` is the power of `zone`.
    Voltage {
        current: u32,
        zone: String,
        item: Item,
        by: PairedBy,
    },
    /// This current is paired with `voltage` (the pair is described on the voltage).
    Current {
        voltage: u32,
    },
    Skipped(Skip),
}

impl Use {
    pub fn is_used(&self) -> bool {
        !matches!(self, Use::Skipped(_))
    }
}

/// One channel and what it became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub channel: Channel,
    pub what: Use,
}

/// A channel's identity for "prefer energy, then power, then V × I".
struct Identity {
    name: String,
    zone: String,
    labelled: bool,
    index: u32,
}

impl Identity {
    fn same_channel(&self, other: &Identity) -> bool {
        if self.labelled && other.labelled {
            self.zone == other.zone
        } else {
            self.index == other.index
        }
    }
}

/// Decides every channel of `chip` (sorted as its channels are).
pub fn plan(chip: &Chip, rule: Option<&Rule>) -> Vec<Decision> {
    let default = Rule::default();
    let rule = rule.unwrap_or(&default);
    let chs = &chip.channels;
    let mut uses: Vec<Option<Use>> = chs
        .iter()
        .map(|c| c.disabled.then_some(Use::Skipped(Skip::Disabled)))
        .collect();
    let mut measured: Vec<Identity> = Vec::new();
    for kind in [Kind::Energy, Kind::Power] {
        // Energy counters cover power sensors; channels of one kind never cover each other.
        let covering = measured.len();
        for (i, c) in chs.iter().enumerate() {
            if c.kind != kind || uses[i].is_some() {
                continue;
            }
            let id = Identity {
                name: c.to_string(),
                zone: zone_for(&chip.name, c.label.as_deref(), kind.prefix(), c.index),
                labelled: c.label.is_some(),
                index: c.index,
            };
            let by = measured[..covering].iter().find(|m| m.same_channel(&id));
            uses[i] = Some(match (by, kind) {
                (Some(by), _) => Use::Skipped(Skip::Covered {
                    by: by.name.clone(),
                }),
                (None, Kind::Energy) if c.input => Use::Energy {
                    zone: id.zone.clone(),
                },
                (None, Kind::Energy) => Use::Skipped(Skip::Unreadable(format!("no {c}_input"))),
                (None, _) => Use::Power {
                    zone: id.zone.clone(),
                    item: c.item().expect("channels have a reading"),
                },
            });
            if uses[i].as_ref().is_some_and(Use::is_used) {
                measured.push(id);
            }
        }
    }
    skip_by_rule(chs, rule, &mut uses);
    for (v, c, by) in pairs(chs, rule, &uses) {
        decide_pair(chip, (v, c, by), &measured, &mut uses);
    }
    let currents = chs.iter().any(|c| c.kind == Kind::Current);
    chs.iter()
        .zip(uses)
        .map(|(c, u)| Decision {
            channel: c.clone(),
            what: u.unwrap_or(Use::Skipped(match c.kind {
                Kind::Voltage if !currents => Skip::NoCurrents,
                _ => Skip::NoPair,
            })),
        })
        .collect()
}

/// The chip table's shunt and non-supply channels, and PMBus phase currents.
fn skip_by_rule(chs: &[Channel], rule: &Rule, uses: &mut [Option<Use>]) {
    for (c, u) in chs.iter().zip(uses.iter_mut()) {
        if u.is_some() {
            continue;
        }
        *u = match c.kind {
            Kind::Voltage if rule.shunt.contains(&c.index) => Some(Use::Skipped(Skip::Shunt)),
            Kind::Voltage if rule.skip_in.contains(&c.index) => Some(Use::Skipped(Skip::NotSupply)),
            Kind::Current if rule.skip_curr.contains(&c.index) => {
                Some(Use::Skipped(Skip::NotSupply))
            }
            Kind::Current if c.label.as_deref().is_some_and(is_phase) => {
                Some(Use::Skipped(Skip::Phase))
            }
            _ => None,
        };
    }
}

/// Voltage and current positions (in `chs`) that go together: by label, by the table, by index.
fn pairs(chs: &[Channel], rule: &Rule, uses: &[Option<Use>]) -> Vec<(usize, usize, PairedBy)> {
    let free = |kind: Kind| -> Vec<usize> {
        (0..chs.len())
            .filter(|&i| chs[i].kind == kind && uses[i].is_none())
            .collect()
    };
    let (mut volts, mut currs) = (free(Kind::Voltage), free(Kind::Current));
    let mut out = Vec::new();
    let mut take = |want: &dyn Fn(&Channel, &Channel) -> bool, by: PairedBy| {
        let mut vi = 0;
        while vi < volts.len() {
            let v = volts[vi];
            if let Some(ci) = currs.iter().position(|&c| want(&chs[v], &chs[c])) {
                out.push((v, currs.remove(ci), by));
                volts.remove(vi);
            } else {
                vi += 1;
            }
        }
    };
    take(
        &|v, c| match (&v.label, &c.label) {
            (Some(a), Some(b)) => labels_match(a, b),
            _ => false,
        },
        PairedBy::Label,
    );
    for &(vn, cn) in &rule.pairs {
        take(&|v, c| v.index == vn && c.index == cn, PairedBy::Table);
    }
    if rule.by_index {
        // Two labels that differ say the channels are not one supply.
        take(
            &|v, c| v.index == c.index && (v.label.is_none() || c.label.is_none()),
            PairedBy::Index,
        );
    }
    out
}

/// Records a pair on both channels, unless the chip measures it already or the readings differ.
fn decide_pair(
    chip: &Chip,
    (v, c, by): (usize, usize, PairedBy),
    measured: &[Identity],
    uses: &mut [Option<Use>],
) {
    let (volt, curr) = (&chip.channels[v], &chip.channels[c]);
    let (zone, labelled) = pair_zone(&chip.name, volt, curr);
    let id = Identity {
        name: String::new(),
        zone,
        labelled,
        index: curr.index,
    };
    // `_average` only where both sides have it; never one of each.
    let item = match (volt.input && curr.input, volt.average && curr.average) {
        (true, _) => Some(Item::Input),
        (false, true) => Some(Item::Average),
        _ => None,
    };
    let (vu, cu) = match (measured.iter().find(|m| m.same_channel(&id)), item) {
        (Some(m), _) => {
            let covered = Use::Skipped(Skip::Covered { by: m.name.clone() });
            (covered.clone(), covered)
        }
        (None, None) => (
            Use::Skipped(Skip::NoMatchingReading {
                with: curr.to_string(),
            }),
            Use::Skipped(Skip::NoMatchingReading {
                with: volt.to_string(),
            }),
        ),
        (None, Some(item)) => (
            Use::Voltage {
                current: curr.index,
                zone: id.zone,
                item,
                by,
            },
            Use::Current {
                voltage: volt.index,
            },
        ),
    };
    uses[v] = Some(vu);
    uses[c] = Some(cu);
}

/// The zone of a pair, and whether it was named from a label: PMBus currents name the power as
/// the chip's own power sensors would (`iin` → `pin`, `iout1` → `pout1`); otherwise the
/// voltage's label, the current's, or `<chip>_power<current index>`.
fn pair_zone(chip: &str, v: &Channel, c: &Channel) -> (String, bool) {
    let pmbus = c
        .label
        .as_deref()
        .filter(|l| is_pmbus_current(l))
        .map(|l| format!("p{}", &l[1..]));
    match pmbus
        .as_deref()
        .or(v.label.as_deref())
        .or(c.label.as_deref())
    {
        Some(l) => (zone_for(chip, Some(l), "power", c.index), true),
        None => (zone_for(chip, None, "power", c.index), false),
    }
}

/// Equal labels, or PMBus's `vX` and `iX` (`vin`/`iin`, `vout1`/`iout1`).
fn labels_match(v: &str, c: &str) -> bool {
    if v.eq_ignore_ascii_case(c) {
        return true;
    }
    let (Some(vr), Some(cr)) = (strip_ci(v, 'v'), strip_ci(c, 'i')) else {
        return false;
    };
    !vr.is_empty() && vr.eq_ignore_ascii_case(cr)
}

fn strip_ci(s: &str, first: char) -> Option<&str> {
    let mut chars = s.chars();
    chars
        .next()
        .filter(|c| c.eq_ignore_ascii_case(&first))
        .map(|_| chars.as_str())
}

/// `iin`, `iin2`, `iout1`: a PMBus current label (pmbus.rst).
fn is_pmbus_current(l: &str) -> bool {
    ["iin", "iout"].iter().any(|p| {
        l.strip_prefix(p)
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
    })
}

/// `iout1.0`, `iin1.2`: one phase of a PMBus current (pmbus.rst: `ioutY.Z`).
fn is_phase(l: &str) -> bool {
    ["iin", "iout"].iter().any(|p| {
        l.strip_prefix(p).is_some_and(|rest| {
            rest.split_once('.').is_some_and(|(y, z)| {
                y.chars().all(|c| c.is_ascii_digit())
                    && !z.is_empty()
                    && z.chars().all(|c| c.is_ascii_digit())
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(kind: Kind, index: u32, label: Option<&str>) -> Channel {
        Channel {
            kind,
            index,
            label: label.map(str::to_owned),
            disabled: false,
            input: true,
            average: false,
        }
    }

    fn chip(name: &str, channels: Vec<Channel>) -> Chip {
        Chip {
            hwmon: "hwmon0".into(),
            name: name.into(),
            dir: "/x".into(),
            channels,
        }
    }

    /// Each channel as `name: outcome` for comparing with a literal.
    fn summary(ds: &[Decision]) -> Vec<String> {
        ds.iter()
            .map(|d| {
                let what = match &d.what {
                    Use::Energy { zone } => format!("energy {zone}"),
                    Use::Power { zone, .. } => format!("power {zone}"),
                    Use::Voltage {
                        current, zone, by, ..
                    } => format!("× curr{current} {zone} {by}"),
                    Use::Current { voltage } => format!("with in{voltage}"),
                    Use::Skipped(s) => format!("skip: {s}"),
                };
                format!("{}: {what}", d.channel)
            })
            .collect()
    }

    #[test]
    fn labels_and_phases() {
        assert!(labels_match("VDD_IN", "vdd_in"));
        assert!(labels_match("vin", "iin") && labels_match("vout2", "iout2"));
        assert!(!labels_match("vout1", "iout2") && !labels_match("v", "i"));
        assert!(!labels_match("VDD", "curr"));
        assert!(is_phase("iout1.0") && is_phase("iin2.13"));
        assert!(!is_phase("iout1") && !is_phase("iout.") && !is_phase("vout1.0"));
        assert!(is_pmbus_current("iin") && is_pmbus_current("iout12"));
        assert!(!is_pmbus_current("iout1.0") && !is_pmbus_current("ipsu"));
    }

    #[test]
    fn label_beats_table_beats_index() {
        use Kind::*;
        // in1 and curr2 share a label; the table pairs in2 with curr1; in3/curr3 by index.
        let c = chip(
            "x",
            vec![
                ch(Voltage, 1, Some("RAIL_A")),
                ch(Voltage, 2, None),
                ch(Voltage, 3, None),
                ch(Voltage, 4, Some("RAIL_D")),
                ch(Current, 1, None),
                ch(Current, 2, Some("rail_a")),
                ch(Current, 3, None),
                ch(Current, 4, Some("OTHER")),
            ],
        );
        let rule = Rule {
            pairs: vec![(2, 1)],
            ..Rule::default()
        };
        assert_eq!(
            summary(&plan(&c, Some(&rule))),
            [
                "in1: × curr2 rail_a by label",
                "in2: × curr1 x_power1 by the chip table",
                "in3: × curr3 x_power3 by index",
                "in4: skip: nothing to pair it with",
                "curr1: with in2",
                "curr2: with in1",
                "curr3: with in3",
                "curr4: skip: nothing to pair it with",
            ]
        );
    }

    #[test]
    fn energy_then_power_then_product_per_channel() {
        use Kind::*;
        let mut p2 = ch(Power, 2, None);
        p2.input = false;
        p2.average = true;
        let c = chip(
            "sq52206",
            vec![
                ch(Energy, 1, None),
                ch(Power, 1, None),
                p2,
                ch(Voltage, 0, None),
                ch(Voltage, 1, None),
                ch(Voltage, 3, None),
                ch(Current, 1, None),
                ch(Current, 3, None),
            ],
        );
        let rule = Rule {
            pairs: vec![(1, 1)],
            shunt: vec![0],
            ..Rule::default()
        };
        assert_eq!(
            summary(&plan(&c, Some(&rule))),
            [
                "energy1: energy sq52206_energy1",
                "power1: skip: the chip measures it as energy1",
                "power2: power sq52206_power2",
                "in0: skip: a shunt voltage, not a supply (chip table)",
                "in1: skip: the chip measures it as energy1",
                "in3: × curr3 sq52206_power3 by index",
                "curr1: skip: the chip measures it as energy1",
                "curr3: with in3",
            ]
        );
    }

    #[test]
    fn pmbus_pairs_are_named_like_the_chips_power_sensors() {
        use Kind::*;
        let c = chip(
            "xdpe12284",
            vec![
                ch(Power, 1, Some("pin")),
                ch(Voltage, 1, Some("vin")),
                ch(Voltage, 2, Some("vout1")),
                ch(Voltage, 3, Some("vcap")),
                ch(Current, 1, Some("iin")),
                ch(Current, 2, Some("iout1")),
                ch(Current, 3, Some("iout1.0")),
                ch(Current, 4, Some("iout1.1")),
            ],
        );
        let rule = Rule {
            by_index: false,
            ..Rule::default()
        };
        assert_eq!(
            summary(&plan(&c, Some(&rule))),
            [
                "power1: power pin",
                "in1: skip: the chip measures it as power1",
                "in2: × curr2 pout1 by label",
                "in3: skip: nothing to pair it with",
                "curr1: skip: the chip measures it as power1",
                "curr2: with in2",
                "curr3: skip: one phase of a regulator's output current",
                "curr4: skip: one phase of a regulator's output current",
            ]
        );
    }

    #[test]
    fn disabled_and_mismatched_readings() {
        use Kind::*;
        let mut v1 = ch(Voltage, 1, None);
        v1.disabled = true;
        let mut v2 = ch(Voltage, 2, None);
        v2.average = true;
        let mut c2 = ch(Current, 2, None);
        (c2.input, c2.average) = (false, true);
        let mut v3 = ch(Voltage, 3, None);
        v3.input = false;
        v3.average = true;
        let mut e1 = ch(Energy, 1, None);
        e1.disabled = true;
        let c = chip(
            "u",
            vec![
                e1,
                v1,
                v2,
                v3,
                ch(Current, 1, None),
                c2,
                ch(Current, 3, None),
            ],
        );
        let ds = plan(&c, None);
        assert_eq!(
            summary(&ds),
            [
                "energy1: skip: disabled by the driver (_enable = 0)",
                "in1: skip: disabled by the driver (_enable = 0)",
                "in2: × curr2 u_power2 by index",
                "in3: skip: paired with curr3, but one has only _input and the other only _average",
                "curr1: skip: nothing to pair it with",
                "curr2: with in2",
                "curr3: skip: paired with in3, but one has only _input and the other only _average",
            ]
        );
        // in2 has both readings and curr2 only _average: _average on both sides.
        assert!(matches!(
            ds[2].what,
            Use::Voltage {
                item: Item::Average,
                ..
            }
        ));
    }
}
