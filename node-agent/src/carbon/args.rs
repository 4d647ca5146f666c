//! The `--carbon.*` flags, each checked when the command line is parsed (a bad value exits 2
//! naming the flag, before anything starts).

use std::{path::PathBuf, time::Duration};

use http::Uri;

use super::{
    reading::check_value,
    table::{self, Factor},
};
use crate::flags::parse_duration;

/// Where grid carbon intensity comes from, and what multiplies into emissions.
#[derive(clap::Args, Clone, Debug, PartialEq)]
#[command(next_help_heading = "Carbon")]
pub struct CarbonArgs {
    /// Live grid intensity: an HTTP(S) endpoint answering like Electricity Maps' "latest carbon
    /// intensity" (e.g. https://api.electricitymap.org/v3/carbon-intensity/latest?zone=DE),
    /// polled in the background. Preferred over every other source while it answers.
    #[arg(long = "carbon.intensity-url", value_name = "URL", value_parser = parse_url, global = true)]
    pub intensity_url: Option<Uri>,

    /// File holding the API's token, sent as the `auth-token` header; re-read at each poll so
    /// that it can rotate. (Never a flag: command lines are visible to every user.)
    #[arg(long = "carbon.token-file", value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,

    /// How often to poll --carbon.intensity-url (e.g. 15m, 1h).
    #[arg(long = "carbon.refresh", default_value = "15m", value_parser = parse_refresh, global = true)]
    pub refresh: Duration,

    /// How long the last good value of the API (or of the file) stays in force when it fails;
    /// then the next source takes over.
    #[arg(long = "carbon.max-age", default_value = "6h", value_parser = parse_max_age, global = true)]
    pub max_age: Duration,

    /// Intensity from a file you keep up to date: the API's JSON document or a bare number
    /// (g/kWh). Re-read when it changes; write it by renaming into place.
    #[arg(long = "carbon.intensity-file", value_name = "PATH", global = true)]
    pub intensity_file: Option<PathBuf>,

    /// A fixed grid intensity, gCO2e/kWh (0 to 2000).
    #[arg(long = "carbon.intensity", value_name = "G_PER_KWH", value_parser = parse_intensity, global = true)]
    pub intensity: Option<f64>,

    /// The built-in yearly factor of a cloud region (us-east-1, europe-west4, westeurope) or a
    /// country (ISO 3166 code: DE, FR, US). Without it, the node's
    /// topology.kubernetes.io/region is tried.
    #[arg(long = "carbon.zone", value_name = "ZONE", value_parser = parse_zone, global = true)]
    pub zone: Option<Zone>,

    /// Power usage effectiveness of the facility: IT energy × PUE is what the grid supplies
    /// (e.g. 1.1 to 1.2 for hyperscale clouds; at least 1).
    #[arg(long = "carbon.pue", default_value_t = 1.0, value_parser = parse_pue, global = true)]
    pub pue: f64,

    /// The server's manufacturing footprint (kgCO2e), amortised over --carbon.lifetime and
    /// shared among workloads by CPU time (SCI's embodied emissions).
    #[arg(long = "carbon.embodied-kg", value_name = "KG", value_parser = parse_embodied_kg, global = true)]
    pub embodied_kg: Option<f64>,

    /// The server's service life for --carbon.embodied-kg (e.g. 4y, 35040h).
    #[arg(long = "carbon.lifetime", default_value = "4y", value_parser = parse_lifetime, global = true)]
    pub lifetime: Duration,
}

impl Default for CarbonArgs {
    fn default() -> Self {
        Self {
            intensity_url: None,
            token_file: None,
            refresh: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(6 * 3600),
            intensity_file: None,
            intensity: None,
            zone: None,
            pue: 1.0,
            embodied_kg: None,
            lifetime: Duration::from_secs(4 * 365 * 24 * 3600),
        }
    }
}

/// A zone of the built-in table, as `--carbon.zone` names it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Zone(pub &'static Factor);

fn at_least(s: &str, min: Duration, what: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| format!("{e:#}"))?;
    if d < min {
        return Err(format!("{what} must be at least {min:?}"));
    }
    Ok(d)
}

fn parse_refresh(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_secs(1), "the refresh interval")
}

fn parse_max_age(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_secs(1), "the maximum age")
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    at_least(s, Duration::from_secs(86_400), "a server's lifetime")
}

fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() {
        return Err(format!("{s:?} is not a finite number"));
    }
    Ok(v)
}

fn parse_intensity(s: &str) -> Result<f64, String> {
    check_value(number(s)?).map_err(|e| e.to_string())
}

fn parse_pue(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v < 1.0 {
        return Err(format!(
            "a PUE of {v} is below 1: the facility cannot use less energy than its servers"
        ));
    }
    Ok(v)
}

fn parse_embodied_kg(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v < 0.0 {
        return Err(format!("{v} kg is negative"));
    }
    Ok(v)
}

fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "{s:?}: the URL must start with https:// or http://"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{s:?}: the URL has no host"));
    }
    Ok(uri)
}

fn parse_zone(s: &str) -> Result<Zone, String> {
    if let Some(f) = table::lookup(Some(s)) {
        return Ok(Zone(f));
    }
    let close = table::close_matches(s, 6);
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", close.join(", "))
    };
    Err(format!(
        "{s:?} is not in the built-in table{hint} For a grid not listed, use \
         --carbon.intensity (g/kWh) or --carbon.intensity-url. Known zones:\n{}",
        table::known_zones()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        carbon: CarbonArgs,
    }

    fn parse(args: &[&str]) -> Result<CarbonArgs, clap::Error> {
        let mut all = vec!["wattlet"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.carbon)
    }

    /// The flag's error: clap exits 2 and names the flag.
    fn rejected(args: &[&str], flag: &str) -> String {
        let e = parse(args).expect_err("accepted");
        assert_eq!(e.exit_code(), 2, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(flag), "{msg}");
        msg
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        assert_eq!(parse(&[]).unwrap(), CarbonArgs::default());
        let d = CarbonArgs::default();
        assert_eq!(
            d.lifetime,
            Duration::from_secs(35_040 * 3600),
            "4 years, as CCF"
        );
        assert_eq!(d.refresh, Duration::from_secs(900));
        assert_eq!(d.max_age, Duration::from_secs(21_600));
    }

    #[test]
    fn good_values() {
        let a = parse(&[
            "--carbon.intensity-url",
            "https://api.electricitymap.org/v3/carbon-intensity/latest?zone=DE",
            "--carbon.token-file=/run/secrets/em",
            "--carbon.refresh=1h",
            "--carbon.max-age=2d",
            "--carbon.intensity=0",
            "--carbon.zone=westeurope",
            "--carbon.pue=1.135",
            "--carbon.embodied-kg=1500",
            "--carbon.lifetime=35040h",
        ])
        .unwrap();
        assert_eq!(
            a.intensity_url.unwrap().host(),
            Some("api.electricitymap.org")
        );
        assert_eq!(a.refresh, Duration::from_secs(3600));
        assert_eq!(a.max_age, Duration::from_secs(2 * 86_400));
        assert_eq!(a.intensity, Some(0.0));
        assert_eq!(a.zone.unwrap().0.zone, "westeurope");
        assert_eq!((a.pue, a.embodied_kg), (1.135, Some(1500.0)));
        assert_eq!(a.lifetime, CarbonArgs::default().lifetime);
    }

    #[test]
    fn bad_values_exit_2_naming_the_flag() {
        rejected(&["--carbon.intensity=-1"], "--carbon.intensity");
        rejected(&["--carbon.intensity=NaN"], "--carbon.intensity");
        rejected(&["--carbon.intensity=2500"], "--carbon.intensity");
        rejected(&["--carbon.intensity=lots"], "--carbon.intensity");
        rejected(&["--carbon.pue=0.9"], "--carbon.pue");
        rejected(&["--carbon.pue=inf"], "--carbon.pue");
        rejected(
            &["--carbon.intensity-url=ftp://x/y"],
            "--carbon.intensity-url",
        );
        rejected(
            &["--carbon.intensity-url=not a url"],
            "--carbon.intensity-url",
        );
        rejected(
            &["--carbon.intensity-url=/v3/latest"],
            "--carbon.intensity-url",
        );
        rejected(&["--carbon.embodied-kg=-3"], "--carbon.embodied-kg");
        rejected(&["--carbon.lifetime=0"], "--carbon.lifetime");
        rejected(&["--carbon.lifetime=4 parsecs"], "--carbon.lifetime");
        rejected(&["--carbon.refresh=0s"], "--carbon.refresh");
        rejected(&["--carbon.max-age=soon"], "--carbon.max-age");
    }

    #[test]
    fn unknown_zone_suggests_and_lists() {
        let msg = rejected(&["--carbon.zone=us-east-9"], "--carbon.zone");
        assert!(msg.contains("did you mean us-east-1"), "{msg}");
        assert!(msg.contains("Google Cloud regions: "), "{msg}");
        assert!(msg.contains("--carbon.intensity"), "{msg}");
    }

    #[test]
    fn help_has_a_carbon_section() {
        use clap::CommandFactory as _;
        let help = Cli::command().render_long_help().to_string();
        let section = help.split("Carbon:").nth(1).expect("a Carbon heading");
        for flag in [
            "--carbon.intensity-url",
            "--carbon.token-file",
            "--carbon.refresh",
            "--carbon.max-age",
            "--carbon.intensity-file",
            "--carbon.intensity ",
            "--carbon.zone",
            "--carbon.pue",
            "--carbon.embodied-kg",
            "--carbon.lifetime",
        ] {
            assert!(section.contains(flag), "{flag} not under Carbon:\n{help}");
        }
    }
}
