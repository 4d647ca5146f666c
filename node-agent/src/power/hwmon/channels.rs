//! What a chip shows in sysfs: its energy, power, voltage and current channels, their labels,
//! whether the driver disabled them, and which readings they offer.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::power::sysfs::{list_dir, read_attr};

/// The kinds of channel that measure power, directly or as a product (hwmon ABI units: energy
/// µJ, power µW, in mV, curr mA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Energy,
    Power,
    Voltage,
    Current,
}

impl Kind {
    /// The attribute prefix: `energy`, `power`, `in`, `curr`.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Energy => "energy",
            Kind::Power => "power",
            Kind::Voltage => "in",
            Kind::Current => "curr",
        }
    }

    fn from_prefix(s: &str) -> Option<Self> {
        Some(match s {
            "energy" => Kind::Energy,
            "power" => Kind::Power,
            "in" => Kind::Voltage,
            "curr" => Kind::Current,
            _ => return None,
        })
    }
}

/// Which reading of a channel is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Input,
    Average,
}

impl Item {
    pub fn suffix(self) -> &'static str {
        match self {
            Item::Input => "input",
            Item::Average => "average",
        }
    }
}

/// One channel as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub kind: Kind,
    pub index: u32,
    /// `<channel>_label`, trimmed; none if missing or empty.
    pub label: Option<String>,
    /// `<channel>_enable` reads 0.
    pub disabled: bool,
    pub input: bool,
    pub average: bool,
}

impl Channel {
    /// The reading used for this channel alone: `_input`, else `_average`.
    pub fn item(&self) -> Option<Item> {
        match (self.input, self.average) {
            (true, _) => Some(Item::Input),
            (false, true) => Some(Item::Average),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.prefix(), self.index)
    }
}

/// One hwmon chip.
#[derive(Clone, Debug)]
pub struct Chip {
    /// `hwmonN`.
    pub hwmon: String,
    /// The `name` file (the driver's name for the chip), or `hwmonN` without one.
    pub name: String,
    /// Where the channel attributes are: the hwmon directory, or its `device/` for old drivers.
    pub dir: PathBuf,
    /// Sorted by kind and index.
    pub channels: Vec<Channel>,
}

impl Chip {
    /// The chip at `<class>/<hwmon>`.
    pub fn read(class: &Path, hwmon: &str) -> Self {
        let base = class.join(hwmon);
        let name = read_attr(&base.join("name")).unwrap_or_else(|_| hwmon.to_owned());
        // Older drivers keep their attributes under device/.
        let (dir, channels) = match channels(&base) {
            c if c.is_empty() => (base.join("device"), channels(&base.join("device"))),
            c => (base, c),
        };
        Self {
            hwmon: hwmon.to_owned(),
            name,
            dir,
            channels,
        }
    }

    pub fn path(&self, channel: &Channel, item: Item) -> PathBuf {
        self.dir.join(format!("{channel}_{}", item.suffix()))
    }
}

/// `energy3_input` → (Energy, 3, "input").
pub fn parse_attr(name: &str) -> Option<(Kind, u32, &str)> {
    let (sensor, item) = name.split_once('_')?;
    let digits = sensor.find(|c: char| c.is_ascii_digit())?;
    let (kind, index) = sensor.split_at(digits);
    Some((Kind::from_prefix(kind)?, index.parse().ok()?, item))
}

/// The channels in `dir`, sorted.
fn channels(dir: &Path) -> Vec<Channel> {
    let Ok(names) = list_dir(dir) else {
        return Vec::new();
    };
    channels_from(&names, |name| read_attr(&dir.join(name)).ok())
}

/// The channels among a chip's attribute `names`, sorted; `read` gives an attribute's trimmed
/// text (labels and `_enable` are read), none if it cannot be read. Pure given `read`: the
/// fuzz target feeds it any names and contents.
pub fn channels_from(names: &[String], read: impl Fn(&str) -> Option<String>) -> Vec<Channel> {
    let mut out: Vec<Channel> = Vec::new();
    for name in names {
        let Some((kind, index, item)) = parse_attr(name) else {
            continue;
        };
        let ch = match out.iter_mut().find(|c| c.kind == kind && c.index == index) {
            Some(c) => c,
            None => {
                out.push(Channel {
                    kind,
                    index,
                    label: None,
                    disabled: false,
                    input: false,
                    average: false,
                });
                out.last_mut().expect("just pushed")
            }
        };
        match item {
            "input" => ch.input = true,
            "average" => ch.average = true,
            "label" => ch.label = read(name).filter(|l| !l.is_empty()),
            // An unreadable enable file leaves the channel as the driver reports it: enabled.
            "enable" => ch.disabled = read(name).is_some_and(|v| v == "0"),
            _ => {}
        }
    }
    // A channel with only limits or alarms measures nothing.
    out.retain(|c| c.input || c.average);
    out.sort_by_key(|c| (c.kind, c.index));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::fixture::Tree;

    #[test]
    fn attributes() {
        assert_eq!(
            parse_attr("energy12_input"),
            Some((Kind::Energy, 12, "input"))
        );
        assert_eq!(parse_attr("in0_enable"), Some((Kind::Voltage, 0, "enable")));
        assert_eq!(parse_attr("temp1_input"), None);
        assert_eq!(parse_attr("name"), None);
        assert_eq!(parse_attr("in_reset_history"), None);
    }

    #[test]
    fn channels_labels_and_enables() {
        let t = Tree::new();
        let d = "class/hwmon/hwmon4";
        t.file(&format!("{d}/name"), "ina3221")
            .file(&format!("{d}/in1_input"), "5000")
            .file(&format!("{d}/in1_label"), "VDD_IN")
            .file(&format!("{d}/in1_enable"), "1")
            .file(&format!("{d}/in2_input"), "0")
            .file(&format!("{d}/in2_enable"), "0")
            .file(&format!("{d}/in3_label"), "")
            .file(&format!("{d}/in3_input"), "1")
            .file(&format!("{d}/curr1_max"), "3000")
            .file(&format!("{d}/curr2_average"), "10")
            .file(&format!("{d}/temp1_input"), "40000");
        let chip = Chip::read(&t.root().join("class/hwmon"), "hwmon4");
        assert_eq!(chip.name, "ina3221");
        let seen: Vec<_> = chip
            .channels
            .iter()
            .map(|c| (c.to_string(), c.label.as_deref(), c.disabled, c.item()))
            .collect();
        assert_eq!(
            seen,
            [
                ("in1".into(), Some("VDD_IN"), false, Some(Item::Input)),
                ("in2".into(), None, true, Some(Item::Input)),
                ("in3".into(), None, false, Some(Item::Input)),
                ("curr2".into(), None, false, Some(Item::Average)),
            ]
        );
        assert_eq!(
            chip.path(&chip.channels[0], Item::Input),
            t.root().join(d).join("in1_input")
        );
    }
}
