//! Instants and periods as the report's flags take them and its output shows them: Unix
//! milliseconds and milliseconds inside (a period that ends on a Prometheus sample, to the
//! millisecond, needs no extrapolation at its end), UTC dates and RFC 3339 times outside. The
//! civil-calendar arithmetic is Howard Hinnant's `days_from_civil` and its inverse (proleptic
//! Gregorian).

use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

pub const SECOND: i64 = 1000;
pub const DAY: i64 = 86_400 * SECOND;

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
        .map_or(0, |d| d.as_millis() as i64)
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

/// `2026-11-01T09:30:00Z` (`…:00.250Z` with milliseconds).
pub fn rfc3339(t: i64) -> String {
    let ms = t.rem_euclid(DAY);
    let s = ms / SECOND;
    let fraction = match ms % SECOND {
        0 => String::new(),
        f => format!(".{f:03}"),
    };
    format!(
        "{}T{:02}:{:02}:{:02}{fraction}Z",
        date(t),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// An instant as Prometheus's API takes it: Unix seconds, with milliseconds.
pub fn prometheus_time(t: i64) -> String {
    format!("{}.{:03}", t.div_euclid(SECOND), t.rem_euclid(SECOND))
}

/// A span as PromQL writes it: `300s`, or `1500ms` when not whole seconds.
pub fn promql_duration(ms: i64) -> String {
    if ms % SECOND == 0 {
        format!("{}s", ms / SECOND)
    } else {
        format!("{ms}ms")
    }
}

fn number(s: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    let n: i64 = s
        .parse()
        .ok()
        .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))?;
    range.contains(&n).then_some(n)
}

/// Milliseconds of a fraction of a second written as digits (`5` → 500, `125` → 125).
fn millis(fraction: &str) -> Option<i64> {
    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
    digits.parse().ok()
}

/// `now`, Unix seconds (`1795322651`, `1795322651.25`), a date (midnight UTC), or an RFC 3339
/// time (`Z` or `±hh:mm`); in Unix milliseconds.
pub fn parse_instant(s: &str) -> Result<i64, TimeError> {
    let bad = || TimeError::Instant(s.to_owned());
    let s = s.trim();
    if s == "now" {
        return Ok(now());
    }
    if let Some(unix) = unix_seconds(s) {
        return Ok(unix);
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
    let ms = match time {
        None => 0,
        Some(t) => time_of_day(t).ok_or_else(bad)?,
    };
    Ok(day * DAY + ms)
}

/// `1795322651` or `1795322651.25` → Unix milliseconds.
fn unix_seconds(s: &str) -> Option<i64> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction = if s.contains('.') {
        millis(fraction)?
    } else {
        0
    };
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(SECOND)?
        .checked_add(fraction)
}

/// `09:30:00Z`, `09:30Z`, `09:30:00.5+01:00` → milliseconds after midnight UTC (may be
/// negative or past a day with an offset; below a millisecond dropped).
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
    let (clock, fraction) = match clock.split_once('.') {
        Some((c, f)) => (c, millis(f)?),
        None => (clock, 0),
    };
    let mut hms = clock.split(':');
    let h = number(hms.next()?, 0..=23)?;
    let m = number(hms.next()?, 0..=59)?;
    let s = hms.next().map_or(Some(0), |s| number(s, 0..=60))?;
    if hms.next().is_some() {
        return None;
    }
    Some((h * 3600 + m * 60 + s - offset) * SECOND + fraction)
}

/// `30d`, `12h`, `90m`, `45s`, `2w` → milliseconds.
pub fn parse_span(s: &str) -> Result<i64, TimeError> {
    let bad = || TimeError::Duration(s.to_owned());
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => SECOND,
        "m" => 60 * SECOND,
        "h" => 3600 * SECOND,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).filter(|&v| v > 0).ok_or_else(bad)
}

/// Milliseconds as a person reads a period: `30 days`, `5 min`, `1 h 30 min`, `42 s`.
pub fn span(ms: i64) -> String {
    let seconds = (ms + SECOND / 2) / SECOND;
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match seconds {
        s if s >= 86_400 && s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s >= 86_400 => format!("{:.1} days", s as f64 / 86_400.0),
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

    const T: i64 = 1_700_000_000_000;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(rfc3339(T), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(T + 250), "2023-11-14T22:13:20.250Z");
        assert_eq!(parse_instant("2023-11-14T22:13:20Z"), Ok(T));
        assert_eq!(parse_instant("2023-11-14T23:13:20+01:00"), Ok(T));
        assert_eq!(parse_instant("2023-11-14T21:13:20.75-01:00"), Ok(T + 750));
        assert_eq!(parse_instant("2024-02-29"), Ok(1_709_164_800_000));
        assert_eq!(parse_instant("1700000000"), Ok(T));
        assert_eq!(parse_instant("1700000000.5"), Ok(T + 500));
        for t in [0, 951_782_400_000, 1_709_164_800_123, 4_102_444_799_000] {
            assert_eq!(parse_instant(&rfc3339(t)), Ok(t), "{}", rfc3339(t));
        }
        assert_eq!(day_start(T), 1_699_920_000_000);
        assert_eq!(date(day_start(T)), "2023-11-14");
        assert_eq!(prometheus_time(T + 5), "1700000000.005");
        assert_eq!(promql_duration(300_000), "300s");
        assert_eq!(promql_duration(1_500), "1500ms");
    }

    #[test]
    fn bad_times_are_named() {
        for bad in [
            "1700000000.",
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
        assert_eq!(parse_span("5m"), Ok(300_000));
        assert_eq!(parse_span("2w"), Ok(14 * DAY));
        assert!(parse_span("5").is_err() && parse_span("0d").is_err() && parse_span("1y").is_err());
        assert_eq!(span(30 * DAY), "30 days");
        assert_eq!(span(300_000), "5 min");
        assert_eq!(span(5_400_000), "1 h 30 min");
        assert_eq!(span(41_600), "42 s");
    }
}
