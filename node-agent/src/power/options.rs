//! The power layer's flags: where the host's files are, which sources to use, the ceiling, and
//! the model's coefficients.

use std::path::PathBuf;

use super::{
    SourceError, SourceKind,
    hwmon::{ChipFile, ChipRules},
    model::ModelOverrides,
    redfish::{RedfishError, RedfishOptions},
    zone::DEFAULT_CEILING_WATTS,
};
use crate::flags::positive_watts;

#[derive(clap::Args, Clone, Debug)]
pub struct PowerOptions {
    /// Where sysfs is mounted: power sources (powercap, hwmon, the perf power PMU) are read
    /// below it. The eBPF side always uses the running kernel.
    #[arg(
        long = "path.sysfs",
        value_name = "PATH",
        default_value = "/sys",
        global = true
    )]
    pub sysfs: PathBuf,

    /// Where procfs is mounted: cpuinfo and meminfo for the power model are read below it.
    #[arg(
        long = "path.procfs",
        value_name = "PATH",
        default_value = "/proc",
        global = true
    )]
    pub procfs: PathBuf,

    /// Power sources in order of preference; the first that works here is used.
    #[arg(
        long = "power.sources",
        value_name = "SOURCES",
        value_enum,
        value_delimiter = ',',
        default_value = "perf,powercap,hwmon,model",
        global = true
    )]
    pub preference: Vec<SourceKind>,

    /// Use this power source and no other (fail if it cannot be used).
    #[arg(
        long = "power-source",
        value_name = "SOURCE",
        value_enum,
        global = true
    )]
    pub forced: Option<SourceKind>,

    /// The most power one energy counter (a socket's zone, one sensor) can show: readings
    /// implying more are dropped and counted, never exported as spikes. Whole-platform meters
    /// (psys, an ACPI power meter) get 20 times this.
    #[arg(
        long = "power.ceiling-watts",
        value_name = "WATTS",
        default_value_t = DEFAULT_CEILING_WATTS,
        value_parser = positive_watts,
        allow_negative_numbers = true,
        global = true
    )]
    pub ceiling_watts: f64,

    /// Extra hwmon chip rules (which voltage goes with which current, which channels are
    /// shunts), one chip a line in the format of the built-in table: `NAME pair=IN:CURR,…
    /// shunt=N,… skip-in=N,… skip-curr=N,… index=no`. A chip named here replaces its built-in
    /// rule.
    #[arg(
        long = "power.hwmon.chips",
        value_name = "FILE",
        value_parser = ChipFile::parse_flag,
        global = true
    )]
    pub hwmon_chips: Option<ChipFile>,

    #[command(flatten)]
    pub model: ModelOverrides,

    #[command(flatten)]
    pub redfish: RedfishOptions,
}

impl Default for PowerOptions {
    /// The flags' defaults.
    fn default() -> Self {
        crate::flags::defaults()
    }
}

impl PowerOptions {
    /// The hwmon chip table with `--power.hwmon.chips` over it.
    pub fn chip_rules(&self) -> ChipRules {
        ChipRules::new(self.hwmon_chips.as_ref())
    }

    /// What the flags' value parsers cannot check one at a time; the error names the flags.
    pub fn check(&self) -> Result<(), SourceError> {
        self.model.check()?;
        self.redfish.check().map_err(RedfishError::Flags)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{config::Cli, power::fixture::Tree};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wattlet").chain(args.iter().copied()))
    }

    /// Fails when parsed, with exit status 2 and every word of `names` in the message.
    fn rejected(args: &[&str], names: &[&str]) {
        let e = parse(args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} accepted"));
        assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        let text = e.to_string();
        for n in names {
            assert!(text.contains(n), "{args:?}: {n:?} not in\n{text}");
        }
    }

    #[test]
    fn redfish_flags_are_checked_when_parsed() {
        let t = Tree::new();
        t.file("creds", "admin:pw");
        t.file("bad-creds", "admin");
        let ca = rcgen::generate_simple_self_signed(vec!["bmc".into()]).unwrap();
        t.file("ca.pem", &ca.cert.pem());
        let ca = t.root().join("ca.pem");
        let creds = t.root().join("creds");
        let bad = t.root().join("bad-creds");
        let url = "https://bmc.example";
        let cli = parse(&[
            "--power.redfish.url",
            url,
            "--power.redfish.credentials-file",
            creds.to_str().unwrap(),
            "--power.redfish.interval",
            "30s",
            "--power.redfish.system",
            "System.Embedded.1",
        ])
        .unwrap();
        let r = &cli.options.power.redfish;
        assert_eq!(
            r.url.as_ref().unwrap().to_string(),
            "https://bmc.example/redfish/v1"
        );
        assert_eq!(r.credentials.as_ref().unwrap().username, "admin");
        assert_eq!(
            r.staleness(),
            Duration::from_secs(90),
            "3 intervals by default"
        );
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(
            parse(&[]).unwrap().options.power.redfish.interval,
            Duration::from_secs(10)
        );
        rejected(
            &["--power.redfish.url", "http://bmc"],
            &["--power.redfish.url", "https://"],
        );
        rejected(
            &[
                "--power.redfish.url",
                url,
                "--power.redfish.credentials-file",
                bad.to_str().unwrap(),
            ],
            &["--power.redfish.credentials-file", "username:password"],
        );
        rejected(
            &[
                "--power.redfish.url",
                url,
                "--power.redfish.ca-file",
                "/nonexistent/ca.pem",
            ],
            &["--power.redfish.ca-file", "cannot read /nonexistent/ca.pem"],
        );
        rejected(
            &["--power.redfish.credentials-file", creds.to_str().unwrap()],
            &["--power.redfish.url"],
        );
        rejected(
            &[
                "--power.redfish.url",
                url,
                "--power.redfish.insecure",
                "--power.redfish.ca-file",
                ca.to_str().unwrap(),
            ],
            &["--power.redfish.insecure", "--power.redfish.ca-file"],
        );
        rejected(
            &[
                "--power.redfish.url",
                url,
                "--power.redfish.interval",
                "10s",
                "--power.redfish.staleness",
                "10s",
            ],
            &[
                "--power.redfish.staleness",
                "must be longer than --power.redfish.interval",
            ],
        );
        rejected(
            &["--power.redfish.url", url, "--power.redfish.timeout", "0s"],
            &["--power.redfish.timeout", "longer than zero"],
        );
    }

    #[test]
    fn a_chip_file_is_checked_when_parsed() {
        let t = Tree::new();
        t.file("chips", "ok pair=1:1\nbroken pair=1");
        let path = t.root().join("chips");
        rejected(
            &["--power.hwmon.chips", path.to_str().unwrap()],
            &["--power.hwmon.chips", "chips:2: \"1\": expected IN:CURR"],
        );
        t.file("chips", "mine pair=2:1");
        let cli = parse(&["--power.hwmon.chips", path.to_str().unwrap()]).unwrap();
        let rules = cli.options.power.chip_rules();
        assert_eq!(rules.get("mine").unwrap().0.pairs, [(2, 1)]);
    }
}
