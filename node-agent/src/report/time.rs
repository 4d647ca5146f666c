//! Instants and periods as the report's flags take them and its output shows them: Unix seconds
//! inside, UTC dates and RFC 3339 times outside. The civil-calendar arithmetic is Howard
//! Hinnant's `days_from_civil` and its inverse (proleptic Gregorian, exact for any year here).

use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

pub const DAY: i64 = 86_400;

#[derive(Debug, Error, PartialEq)]
pub enum TimeError {
    #[error(
        "{0:?} is not a time: use 2026-11-01, 2026-11-01T09:30:00Z, 2026-11-01T09:30:00+01:00, \
         Unix seconds, or now"
    )]
    Instant(String),
    #[error("{0:?} is not a duration: use a number and a unit, e.g. 30d, 12h, 90m, 5m, 2w")]
    Duration(String),
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The start (00:00 UTC) of the day `t` is in.
pub fn day_start(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// `2026-11-01` (UTC).
pub fn date(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-11-01T09:30:00Z`.
pub fn rfc3339(t: i64) -> String {
    let s = t.rem_euclid(DAY);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(t),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn number(s: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    let n: i64 = s
        .parse()
        .ok()
        .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))?;
    range.contains(&n).then_some(n)
}

/// `now`, Unix seconds, a date (midnight UTC), or an RFC 3339 time (`Z` or `±hh:mm`).
pub fn parse_instant(s: &str) -> Result<i64, TimeError> {
    let bad = || TimeError::Instant(s.to_owned());
    let s = s.trim();
    if s == "now" {
        return Ok(now());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (y, m, d) = (
        number(y, 1970..=9999).ok_or_else(bad)?,
        number(m, 1..=12).ok_or_else(bad)?,
        number(d, 1..=31).ok_or_else(bad)?,
    );
    let day = days_from_civil(y, m, d);
    if civil_from_days(day) != (y, m, d) {
        return Err(bad());
    }
    let secs = match time {
        None => 0,
        Some(t) => time_of_day(t).ok_or_else(bad)?,
    };
    Ok(day * DAY + secs)
}

/// `09:30:00Z`, `09:30Z`, `09:30:00.5+01:00` → seconds after midnight UTC (may be negative or
/// past a day with an offset; fractions of a second dropped).
fn time_of_day(t: &str) -> Option<i64> {
    let (clock, offset) = if let Some(c) = t.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = t.rfind(['+', '-'])?;
        let (c, o) = t.split_at(at);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (
            c,
            sign * (number(oh, 0..=23)? * 3600 + number(om, 0..=59)? * 60),
        )
    };
    let clock = clock.split_once('.').map_or(clock, |(c, _)| c);
    let mut hms = clock.split(':');
    let h = number(hms.next()?, 0..=23)?;
    let m = number(hms.next()?, 0..=59)?;
    let s = hms.next().map_or(Some(0), |s| number(s, 0..=60))?;
    if hms.next().is_some() {
        return None;
    }
    Some(h * 3600 + m * 60 + s - offset)
}

/// `30d`, `12h`, `90m`, `45s`, `2w` → seconds.
pub fn parse_span(s: &str) -> Result<i64, TimeError> {
    let bad = || TimeError::Duration(s.to_owned());
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).filter(|&v| v > 0).ok_or_else(bad)
}

/// Seconds as a person reads a period: `30 days`, `5 min`, `1 h 30 min`.
pub fn span(seconds: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match seconds {
        s if s >= DAY && s % DAY == 0 => plural(s / DAY, "day"),
        s if s >= DAY => format!("{:.1} days", s as f64 / DAY as f64),
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s / 60 % 60),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_instant("2023-11-14T22:13:20Z"), Ok(1_700_000_000));
        assert_eq!(
            parse_instant("2023-11-14T23:13:20+01:00"),
            Ok(1_700_000_000)
        );
        assert_eq!(
            parse_instant("2023-11-14T21:13:20.75-01:00"),
            Ok(1_700_000_000)
        );
        assert_eq!(parse_instant("2024-02-29"), Ok(1_709_164_800));
        assert_eq!(parse_instant("1700000000"), Ok(1_700_000_000));
        for t in [0, 951_782_400, 1_709_164_800, 4_102_444_799] {
            assert_eq!(parse_instant(&rfc3339(t)), Ok(t), "{}", rfc3339(t));
        }
        assert_eq!(day_start(1_700_000_000), 1_699_920_000);
        assert_eq!(date(day_start(1_700_000_000)), "2023-11-14");
    }

    #[test]
    fn bad_times_are_named() {
        for bad in [
            "2023-02-29",
            "2023-13-01",
            "yesterday",
            "2023-11-14T25:00Z",
            "2023-11-14T10",
            "",
        ] {
            let e = parse_instant(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn spans() {
        assert_eq!(parse_span("30d"), Ok(30 * DAY));
        assert_eq!(parse_span("5m"), Ok(300));
        assert_eq!(parse_span("2w"), Ok(14 * DAY));
        assert!(parse_span("5").is_err() && parse_span("0d").is_err() && parse_span("1y").is_err());
        assert_eq!(span(30 * DAY), "30 days");
        assert_eq!(span(300), "5 min");
        assert_eq!(span(5400), "1 h 30 min");
        assert_eq!(span(42), "42 s");
    }
}
