//! Power sources' host files: powercap zones, hwmon chips and the chip table, the perf power
//! PMU's sysfs description. What is parsed is also counted, so that the numbers that reach
//! attribution are checked: finite, non-negative, within the ceiling, never going back.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf, sync::Arc, time::Duration};

use super::input::Fields;
use crate::{
    power::{
        EnergyCounter, PowerIntegrator, Update,
        hwmon::{
            ChipFile, ChipRules, Decision, Skip, Use,
            channels::{Channel, Chip, Item, Kind, channels_from},
            chips::{self, Rule},
            pairing, product_watts,
        },
        perf::{parse_cpu_list, parse_event_config, parse_scale, zone_for_event},
        powercap::zone_name,
        sysfs::{parse_i64, parse_u64},
        zone,
    },
    units::{JOULES_PER_MICROJOULE, WATTS_PER_MICROWATT},
};

/// Fields: a zone's `name`, its `max_energy_range_uj`, then its `energy_uj` read a second
/// apart. The zone name is a label; the counter adds what the readings allow and no more.
pub fn powercap(data: &[u8]) {
    let f = Fields::of(data);
    let zone = zone_name(f.get(0).trim());
    assert!(is_label_text(&zone), "{zone:?}");
    assert_eq!(zone_name(&zone), zone, "zone names are stable");
    // A zone whose range cannot be read is skipped when the source opens.
    let Some(max) = parse_u64(f.get(1)) else {
        return;
    };
    let mut counter = EnergyCounter::new(JOULES_PER_MICROJOULE, Some(max));
    let readings = f.from(2).filter_map(parse_u64);
    count(
        &mut counter,
        readings,
        zone::ceiling(&zone, zone::DEFAULT_CEILING_WATTS),
    );
}

/// Fields: the chip's `name`; its attributes, one `file=contents` a line (a value of several
/// `|`-separated readings is read that many times, a second apart); a chip table for
/// `--power.hwmon.chips`. Every channel is decided once, pairs point at each other, zones are
/// labels, and what is read adds up to finite, non-negative energy.
pub fn hwmon(data: &[u8]) {
    let f = Fields::of(data);
    let attrs: BTreeMap<String, String> = f
        .get(1)
        .lines()
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let names: Vec<String> = attrs.keys().cloned().collect();
    let channels = channels_from(&names, |n| attrs.get(n).map(|v| v.trim().to_owned()));
    check_channels(&channels);
    let file = chips::parse(f.get(2), "fuzz").ok().map(|rules| ChipFile {
        path: PathBuf::from("/etc/wattlet/chips"),
        rules: Arc::new(rules),
    });
    let chip = Chip {
        hwmon: "hwmon0".into(),
        name: f.get(0).trim().to_owned(),
        dir: PathBuf::new(),
        channels,
    };
    let rules = ChipRules::new(file.as_ref());
    let decisions = pairing::plan(&chip, rules.get(&chip.name).map(|(r, _)| r));
    check_decisions(&chip, &decisions);
    let value = |ch: &Channel, item: Item| {
        let name = format!("{ch}_{}", item.suffix());
        attrs.get(&name).cloned().unwrap_or_default()
    };
    for d in &decisions {
        read_decision(d, &decisions, &value);
    }
}

/// Sorted by kind and index, each once, each with a reading.
fn check_channels(channels: &[Channel]) {
    for pair in channels.windows(2) {
        assert!((pair[0].kind, pair[0].index) < (pair[1].kind, pair[1].index));
    }
    for c in channels {
        assert!(c.item().is_some(), "{c:?}");
        assert!(
            c.label
                .as_deref()
                .is_none_or(|l| !l.is_empty() && l.trim() == l)
        );
    }
}

/// One decision per channel, in order; a used channel's kind is what it is used as; a pair's
/// voltage and current name each other.
fn check_decisions(chip: &Chip, decisions: &[Decision]) {
    assert_eq!(decisions.len(), chip.channels.len());
    let find = |kind: Kind, index: u32| {
        decisions
            .iter()
            .find(|d| d.channel.kind == kind && d.channel.index == index)
            .unwrap_or_else(|| panic!("{kind:?}{index} is not among {decisions:?}"))
    };
    for (d, c) in decisions.iter().zip(&chip.channels) {
        assert_eq!(&d.channel, c);
        assert_eq!(d.what == Use::Skipped(Skip::Disabled), c.disabled, "{d:?}");
        match &d.what {
            Use::Energy { zone } => {
                assert!(
                    c.kind == Kind::Energy && c.input && is_label_text(zone),
                    "{d:?}"
                )
            }
            Use::Power { zone, item } => {
                assert!(c.kind == Kind::Power && is_label_text(zone), "{d:?}");
                assert!(has(c, *item), "{d:?}");
            }
            Use::Voltage {
                current,
                zone,
                item,
                ..
            } => {
                assert!(c.kind == Kind::Voltage && is_label_text(zone) && has(c, *item));
                let partner = find(Kind::Current, *current);
                assert_eq!(partner.what, Use::Current { voltage: c.index }, "{d:?}");
                assert!(has(&partner.channel, *item), "{partner:?}");
            }
            Use::Current { voltage } => {
                assert_eq!(c.kind, Kind::Current);
                let partner = find(Kind::Voltage, *voltage);
                assert!(
                    matches!(partner.what, Use::Voltage { current, .. } if current == c.index),
                    "{d:?} and {partner:?}"
                );
            }
            Use::Skipped(_) => {}
        }
    }
}

fn has(c: &Channel, item: Item) -> bool {
    match item {
        Item::Input => c.input,
        Item::Average => c.average,
    }
}

/// Reads a used channel's values as the source would, a second apart.
fn read_decision(d: &Decision, all: &[Decision], value: &impl Fn(&Channel, Item) -> String) {
    let ceiling = zone::DEFAULT_CEILING_WATTS;
    match &d.what {
        Use::Energy { zone } => {
            let mut counter = EnergyCounter::new(JOULES_PER_MICROJOULE, None);
            let readings = value(&d.channel, Item::Input);
            let ceiling = zone::ceiling(zone, ceiling);
            count(
                &mut counter,
                readings.split('|').filter_map(parse_u64),
                ceiling,
            );
        }
        Use::Power { item, .. } => {
            let watts = value(&d.channel, *item);
            let watts = watts.split('|').filter_map(parse_u64);
            integrate(watts.map(|uw| uw as f64 * WATTS_PER_MICROWATT), ceiling);
        }
        Use::Voltage { current, item, .. } => {
            let c = all
                .iter()
                .find(|c| c.channel.kind == Kind::Current && c.channel.index == *current)
                .expect("checked: the pair's current exists");
            let (volts, amps) = (value(&d.channel, *item), value(&c.channel, *item));
            let watts = volts
                .split('|')
                .zip(amps.split('|'))
                .filter_map(|(v, a)| Some(product_watts(parse_i64(v)?, parse_i64(a)?)));
            integrate(
                watts.inspect(|w| assert!(w.is_finite() && *w >= 0.0)),
                ceiling,
            );
        }
        Use::Current { .. } | Use::Skipped(_) => {}
    }
}

/// Fields: a chip table. A table that parses names chips as the hwmon `name` file does (in
/// lower case), never pairs a skipped channel, and reads back the same from its own rendering.
pub fn hwmon_chips(data: &[u8]) {
    let Ok(rules) = chips::parse(&String::from_utf8_lossy(data), "fuzz") else {
        return;
    };
    let mut text = String::new();
    for (name, rule) in &rules {
        assert!(!name.is_empty(), "{rules:?}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'),
            "{name:?}"
        );
        let skipped = |v: &u32| rule.shunt.contains(v) || rule.skip_in.contains(v);
        assert!(
            !rule
                .pairs
                .iter()
                .any(|(v, c)| skipped(v) || rule.skip_curr.contains(c))
        );
        writeln!(text, "{name} {}", render(rule)).expect("writing to a String");
    }
    let again = chips::parse(&text, "rendered").unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert_eq!(again, rules, "{text:?}");
}

/// A rule in the chip table's own format.
fn render(rule: &Rule) -> String {
    let list = |key: &str, items: Vec<String>| {
        (!items.is_empty()).then(|| format!("{key}={}", items.join(",")))
    };
    let numbers = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>();
    [
        list(
            "pair",
            rule.pairs.iter().map(|(v, c)| format!("{v}:{c}")).collect(),
        ),
        list("shunt", numbers(&rule.shunt)),
        list("skip-in", numbers(&rule.skip_in)),
        list("skip-curr", numbers(&rule.skip_curr)),
        Some(format!(
            "index={}",
            if rule.by_index { "yes" } else { "no" }
        )),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

/// Fields of the PMU's `power` directory: `type`, `cpumask`, an event's name, its
/// `events/<name>` spec, the `format/` files as `term=config:lo-hi` lines, its `.scale` and
/// `.unit`, then counts read a second apart. The CPU list is sorted and distinct; a config uses
/// only the bits the formats give; a term's value placed in its format's bits reads back.
pub fn perf_pmu(data: &[u8]) {
    let f = Fields::of(data);
    let _ = parse_u64(f.get(0)).map(u32::try_from);
    if let Some(cpus) = parse_cpu_list(f.get(1)) {
        assert!(
            !cpus.is_empty() && cpus.len() <= 65_536,
            "{} CPUs",
            cpus.len()
        );
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
    }
    let zone = zone_for_event(f.get(2).trim());
    assert!(zone.is_none_or(zone::is_label), "{zone:?}");
    let formats: BTreeMap<&str, &str> =
        f.get(4).lines().filter_map(|l| l.split_once('=')).collect();
    let format = |term: &str| formats.get(term).map(|s| (*s).to_owned());
    if let Some(config) = parse_event_config(f.get(3), format) {
        assert_eq!(config & !format_bits(&formats), 0, "{config:#x}");
    }
    config_round_trip(data);
    let Some(scale) = parse_scale(f.get(5)) else {
        return;
    };
    assert!(scale.is_finite() && scale > 0.0);
    if f.get(6).trim() != "Joules" {
        return;
    }
    let mut counter = EnergyCounter::new(scale, None);
    let ceiling = zone::ceiling(zone.unwrap_or(zone::PACKAGE), zone::DEFAULT_CEILING_WATTS);
    count(&mut counter, f.from(7).filter_map(parse_u64), ceiling);
}

/// Every bit the `config:` formats can set.
fn format_bits(formats: &BTreeMap<&str, &str>) -> u64 {
    let bits = |f: &str| -> Option<u64> {
        let bits = f.trim().strip_prefix("config:")?;
        let (lo, hi) = bits.split_once('-').unwrap_or((bits, bits));
        let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
        (lo <= hi && hi <= 63).then(|| (u64::MAX >> (63 - hi)) & (u64::MAX << lo))
    };
    formats
        .values()
        .filter_map(|f| bits(f))
        .fold(0, |a, b| a | b)
}

/// A format `config:lo-hi` and a value that fits, from the input's first bytes.
fn config_round_trip(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let (lo, width) = (u32::from(byte(0) % 64), u32::from(byte(1) % 64) + 1);
    let hi = (lo + width - 1).min(63);
    let mask = u64::MAX >> (63 - (hi - lo));
    let value = u64::from_le_bytes(std::array::from_fn(|i| byte(2 + i))) & mask;
    let format = |term: &str| (term == "event").then(|| format!("config:{lo}-{hi}"));
    for spec in [format!("event={value:#x}"), format!("event={value}")] {
        assert_eq!(
            parse_event_config(&spec, format),
            Some(value << lo),
            "{spec}"
        );
    }
}

/// Feeds a counter readings a second apart: each adds a finite, non-negative amount within the
/// ceiling, and the total never goes down.
fn count(counter: &mut EnergyCounter, readings: impl Iterator<Item = u64>, ceiling_w: f64) {
    for (i, raw) in readings.take(64).enumerate() {
        let before = counter.joules();
        let update = counter.update(raw, Duration::from_secs(i as u64), ceiling_w);
        if let Update::Added { joules, .. } = update {
            assert!(joules.is_finite() && joules >= 0.0, "{joules}");
            assert!(joules <= ceiling_w * (1.0 + 1e-9), "{joules} J in 1 s");
        }
        let total = counter.joules();
        assert!(total.is_finite() && total >= before, "{before} → {total}");
    }
}

/// Integrates power readings a second apart: energy finite, non-negative, never going down.
fn integrate(watts: impl Iterator<Item = f64>, ceiling_w: f64) {
    let mut integrator = PowerIntegrator::default();
    for (i, w) in watts.take(64).enumerate() {
        let before = integrator.joules();
        integrator.update(w, Duration::from_secs(i as u64), ceiling_w);
        let total = integrator.joules();
        assert!(total.is_finite() && total >= before, "{before} → {total}");
    }
}

/// Lowercase ASCII letters, digits and `_`, as [`zone::label`] makes them (possibly empty).
fn is_label_text(s: &str) -> bool {
    s.is_empty() || zone::is_label(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::input::seed;

    /// The seeds get through whole, so that mutations start from the deep paths.
    #[test]
    fn seeds_are_real_shaped() {
        let f = Fields::of(&seed("perf_pmu", "intel-pkg"));
        assert_eq!(parse_cpu_list(f.get(1)), Some(vec![0, 28]));
        assert_eq!(parse_scale(f.get(5)), Some(2f64.powi(-32)));
        let formats = |t: &str| (t == "event").then(|| "config:0-7".to_owned());
        assert_eq!(parse_event_config(f.get(3), formats), Some(2));

        let table = String::from_utf8(seed("hwmon_chips", "builtin")).unwrap();
        assert!(chips::parse(&table, "seed").unwrap().len() > 20);

        let f = Fields::of(&seed("hwmon", "table-pairs"));
        let rules = chips::parse(f.get(2), "seed").unwrap();
        assert_eq!(rules["mychip"].pairs, [(2, 1)]);
        let f = Fields::of(&seed("hwmon", "ina3221"));
        let names: Vec<String> = f
            .get(1)
            .lines()
            .map(|l| l.split('=').next().unwrap().into())
            .collect();
        let attrs: BTreeMap<&str, &str> =
            f.get(1).lines().filter_map(|l| l.split_once('=')).collect();
        let chip = Chip {
            hwmon: "hwmon0".into(),
            name: "ina3221".into(),
            dir: PathBuf::new(),
            channels: channels_from(&names, |n| attrs.get(n).map(|v| v.to_string())),
        };
        let rules = ChipRules::new(None);
        let used = pairing::plan(&chip, rules.get("ina3221").map(|(r, _)| r));
        assert!(
            used.iter()
                .any(|d| matches!(&d.what, Use::Voltage { zone, .. } if zone == "vdd_in"))
        );
    }
}
