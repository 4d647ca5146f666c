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

/// A duration like `5s`, `250ms`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration (examples: 5s, 500ms, 2m)"))?;
    let unit = match unit {
        "" | "s" => Duration::from_secs(1),
        "ms" => Duration::from_millis(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => bail!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)"),
    };
    Duration::try_from_secs_f64(value * unit.as_secs_f64())
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
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e400").is_err());
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
