//! What every layer's flags share: value parsers for durations and watts, and the defaults of a
//! layer's options taken from its flags, so that each default is written once.
//!
//! A value parser's error is shown by clap after the flag's name, with exit status 2.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Command, FromArgMatches};

/// The options a layer gets when no flag is given.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let matches = T::augment_args(Command::new("wattlet"))
        .try_get_matches_from(["wattlet"])
        .expect("every flag has a default");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

/// A duration with a unit: ms, s, m, h, d (24 h), w (7 d), y (365 d), e.g. `5s`, `250ms`,
/// `15m`, `4y`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration (examples: 5s, 500ms, 15m, 4y)"))?;
    let unit_seconds = match unit {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        "y" => 365.0 * 86_400.0,
        _ => bail!("{s:?}: unknown unit {unit:?} (use ms, s, m, h, d, w or y)"),
    };
    Duration::try_from_secs_f64(value * unit_seconds)
        .with_context(|| format!("{s:?} is not a valid duration"))
}

/// A finite, non-negative number (of watts, or watts per unit).
pub fn non_negative(s: &str) -> Result<f64> {
    let w: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a number"))?;
    if !w.is_finite() || w < 0.0 {
        bail!("{s:?} must be a finite, non-negative number");
    }
    Ok(w)
}

/// A finite, positive number of watts.
pub fn positive_watts(s: &str) -> Result<f64> {
    let w = non_negative(s)?;
    if w == 0.0 {
        bail!("{s:?} must be a positive number of watts");
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86_400)
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        // 4 years of 365 days: Cloud Carbon Footprint's 35,040 hours.
        assert_eq!(
            parse_duration("4y").unwrap(),
            Duration::from_secs(35_040 * 3600)
        );
        assert_eq!(
            parse_duration("35040h").unwrap(),
            parse_duration("4y").unwrap()
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("4 years").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-4y").is_err());
        assert!(parse_duration("1e400").is_err());
        assert!(parse_duration("1e400y").is_err());
    }

    #[test]
    fn watts() {
        assert_eq!(positive_watts("1500").unwrap(), 1500.0);
        assert!(positive_watts("NaN").is_err() && positive_watts("0").is_err());
        assert!(positive_watts("-5").is_err() && positive_watts("lots").is_err());
        assert_eq!(non_negative("0").unwrap(), 0.0);
        assert!(non_negative("-0.1").is_err() && non_negative("inf").is_err());
    }
}
