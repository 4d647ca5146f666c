//! The chip table: for chips that report voltages and currents but not power, which voltage
//! goes with which current, and which channels are no supply at all. It is data (`chips.txt`,
//! in the format documented at its top), and `--power.hwmon.chips FILE` adds rules in the same
//! format.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

/// The built-in table.
const BUILTIN: &str = include_str!("chips.txt");

/// What the table says about one chip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `(in, curr)`: `inN × currM` is a supply's power, tried in this order.
    pub pairs: Vec<(u32, u32)>,
    /// Voltages that are the drop across a sense resistor.
    pub shunt: Vec<u32>,
    /// Voltages that supply no current (auxiliary inputs, sums, the chip's own supply).
    pub skip_in: Vec<u32>,
    /// Currents with no supply voltage (sums of channels).
    pub skip_curr: Vec<u32>,
    /// Whether what is left is paired by index (`inN × currN`).
    pub by_index: bool,
}

impl Default for Rule {
    /// No rule: pair by label, then by index.
    fn default() -> Self {
        Self {
            pairs: Vec::new(),
            shunt: Vec::new(),
            skip_in: Vec::new(),
            skip_curr: Vec::new(),
            by_index: true,
        }
    }
}

/// A line of a chip file that is not a rule.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}:{line}: {message}")]
pub struct ChipFileError {
    /// The file (or `built-in chip table`).
    pub origin: String,
    pub line: usize,
    pub message: String,
}

/// Rules from `--power.hwmon.chips`, read and checked when the flag is parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ChipFile {
    pub path: PathBuf,
    pub rules: Arc<BTreeMap<String, Rule>>,
}

impl ChipFile {
    /// The flag's value parser: the file read and every line checked.
    pub fn parse_flag(path: &str) -> Result<Self, String> {
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let rules = parse(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
        Ok(Self {
            path,
            rules: Arc::new(rules),
        })
    }
}

/// The built-in table with the rules of `extra` over it (a chip named there replaces its
/// built-in rule).
#[derive(Clone, Debug)]
pub struct ChipRules {
    extra: Option<ChipFile>,
}

impl ChipRules {
    pub fn new(extra: Option<&ChipFile>) -> Self {
        Self {
            extra: extra.cloned(),
        }
    }

    /// The rule for a chip (`name` as in its hwmon `name` file), and where it comes from.
    pub fn get(&self, name: &str) -> Option<(&Rule, RuleOrigin<'_>)> {
        let key = name.trim().to_ascii_lowercase();
        if let Some(f) = &self.extra
            && let Some(r) = f.rules.get(&key)
        {
            return Some((r, RuleOrigin::File(&f.path)));
        }
        builtin().get(&key).map(|r| (r, RuleOrigin::Builtin))
    }
}

/// Where a chip's rule comes from, for `wattlet check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleOrigin<'a> {
    Builtin,
    File(&'a Path),
}

impl fmt::Display for RuleOrigin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleOrigin::Builtin => f.write_str("the built-in chip table"),
            RuleOrigin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

fn builtin() -> &'static BTreeMap<String, Rule> {
    static TABLE: OnceLock<BTreeMap<String, Rule>> = OnceLock::new();
    TABLE.get_or_init(|| parse(BUILTIN, "built-in chip table").expect("chips.txt parses"))
}

/// Parses a chip file: one rule a line, `#` comments, errors naming the line.
pub fn parse(text: &str, origin: &str) -> Result<BTreeMap<String, Rule>, ChipFileError> {
    let mut rules = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split_once('#').map_or(raw, |(l, _)| l).trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| ChipFileError {
            origin: origin.to_owned(),
            line: i + 1,
            message,
        };
        let mut tokens = line.split_whitespace();
        let names = tokens.next().unwrap_or_default();
        let rule = parse_rule(tokens).map_err(err)?;
        for name in names.split(',') {
            if !is_chip_name(name) {
                return Err(err(format!(
                    "{name:?} is not a chip name (the hwmon `name` file: letters, digits, - and _)"
                )));
            }
            if rules
                .insert(name.to_ascii_lowercase(), rule.clone())
                .is_some()
            {
                return Err(err(format!("{name} has a rule on an earlier line")));
            }
        }
    }
    Ok(rules)
}

fn is_chip_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_rule<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<Rule, String> {
    let mut rule = Rule::default();
    for token in tokens {
        let Some((key, value)) = token.split_once('=') else {
            return Err(format!(
                "{token:?}: expected key=value (pair=, shunt=, skip-in=, skip-curr=, index=)"
            ));
        };
        match key {
            "pair" => rule.pairs = list(value, pair)?,
            "shunt" => rule.shunt = list(value, index)?,
            "skip-in" => rule.skip_in = list(value, index)?,
            "skip-curr" => rule.skip_curr = list(value, index)?,
            "index" => {
                rule.by_index = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(format!("index={value}: expected index=yes or index=no")),
                }
            }
            _ => {
                return Err(format!(
                    "unknown key {key:?} (expected pair=, shunt=, skip-in=, skip-curr=, index=)"
                ));
            }
        }
    }
    let skipped = |i: &u32| rule.shunt.contains(i) || rule.skip_in.contains(i);
    if let Some((v, _)) = rule.pairs.iter().find(|(v, _)| skipped(v)) {
        return Err(format!("in{v} is both paired and skipped"));
    }
    if let Some((_, c)) = rule.pairs.iter().find(|(_, c)| rule.skip_curr.contains(c)) {
        return Err(format!("curr{c} is both paired and skipped"));
    }
    Ok(rule)
}

fn list<T>(value: &str, item: fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    value.split(',').map(item).collect()
}

fn index(s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a channel number"))
}

fn pair(s: &str) -> Result<(u32, u32), String> {
    let (v, c) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected IN:CURR, e.g. pair=2:1 for in2 × curr1"))?;
    Ok((index(v)?, index(c)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_parses_and_names_the_families() {
        let t = builtin();
        let ina3221 = &t["ina3221"];
        assert_eq!(ina3221.pairs, [(1, 1), (2, 2), (3, 3)]);
        assert_eq!(ina3221.shunt, [4, 5, 6]);
        assert_eq!(
            (&ina3221.skip_in[..], &ina3221.skip_curr[..]),
            (&[7][..], &[4][..])
        );
        assert_eq!(t["ina226"].shunt, [0]);
        assert_eq!(t["max20730"].pairs, [(2, 1)]);
        assert!(!t["max20730"].by_index);
        for chip in [
            "ina219",
            "ina209",
            "ina238",
            "ina260",
            "ina233",
            "ltc2945",
            "ltc4282",
            "adm1275",
            "max20751",
            "max34440",
            "tps53679",
            "ir35221",
            "xdpe12284",
            "mp2975",
            "pmbus",
            "ucd9000",
        ] {
            assert!(t.contains_key(chip), "{chip} missing from chips.txt");
        }
    }

    #[test]
    fn a_file_replaces_the_builtin_rule() {
        let file = ChipFile {
            path: "/etc/wattlet/chips".into(),
            rules: Arc::new(parse("INA226 pair=1:1 skip-in=0\nmychip pair=3:2", "f").unwrap()),
        };
        let rules = ChipRules::new(Some(&file));
        let (r, origin) = rules.get("ina226").unwrap();
        assert_eq!(r.skip_in, [0]);
        assert!(r.shunt.is_empty());
        assert_eq!(origin.to_string(), "/etc/wattlet/chips");
        assert_eq!(rules.get("MyChip").unwrap().0.pairs, [(3, 2)]);
        assert_eq!(rules.get("ina3221").unwrap().1, RuleOrigin::Builtin);
        assert!(rules.get("nct6775").is_none());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "a pair=1:1\n\n# c\nb pair=1",
                "f:4: \"1\": expected IN:CURR",
            ),
            ("a bogus=1", "f:1: unknown key \"bogus\""),
            ("a pair=1:x", "f:1: \"x\" is not a channel number"),
            (
                "a index=maybe",
                "f:1: index=maybe: expected index=yes or index=no",
            ),
            ("a shunt", "f:1: \"shunt\": expected key=value"),
            ("a pair=1:1 shunt=1", "f:1: in1 is both paired and skipped"),
            (
                "a pair=1:2 skip-curr=2",
                "f:1: curr2 is both paired and skipped",
            ),
            ("a\na,b", "f:2: a has a rule on an earlier line"),
            ("a/b pair=1:1", "f:1: \"a/b\" is not a chip name"),
        ];
        for (text, want) in cases {
            let e = parse(text, "f").unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_flag_reads_and_checks_the_file() {
        let t = crate::power::fixture::Tree::new();
        t.file("chips", "# mine\nfoo pair=2:1 index=no");
        let path = t.root().join("chips");
        let f = ChipFile::parse_flag(path.to_str().unwrap()).unwrap();
        assert_eq!(f.rules["foo"].pairs, [(2, 1)]);
        t.file("chips", "foo pair=2");
        let e = ChipFile::parse_flag(path.to_str().unwrap()).unwrap_err();
        assert!(e.contains("chips:1: \"2\": expected IN:CURR"), "{e}");
        let e = ChipFile::parse_flag("/nonexistent/chips").unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/chips"), "{e}");
    }
}
