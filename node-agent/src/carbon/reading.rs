//! One intensity value, where it came from, and the parser every source shares.

use std::time::Instant;

use serde_json::Value;

/// The most intensity a grid can show, in g/kWh. Lifecycle figures of coal plants are about
/// 1,000; anything above this is a unit mix-up (lb/MWh, mg/kWh) or garbage.
pub const MAX_GRAMS_PER_KWH: f64 = 2000.0;

/// Where an intensity value came from: the `source` label of the carbon series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// `--carbon.intensity-url`, polled in the background.
    Api,
    /// `--carbon.intensity-file`.
    File,
    /// `--carbon.intensity`.
    Static,
    /// The built-in table, by `--carbon.zone` or the node's region.
    Table,
    /// The world average, when nothing better is configured.
    Default,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Api => "api",
            SourceKind::File => "file",
            SourceKind::Static => "static",
            SourceKind::Table => "table",
            SourceKind::Default => "default",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The intensity in force, as the measuring loop reads it each interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Location-based grid intensity, gCO2e per kWh.
    pub grams_per_kwh: f64,
    pub source: SourceKind,
    /// The grid zone it is for (the API's or file's `zone`, the table's zone), if known.
    pub zone: Option<String>,
    /// The source said the value is an estimate (Electricity Maps' `isEstimated`).
    pub is_estimated: Option<bool>,
    /// When the agent got the value: the fetch, the file read, or startup for fixed values.
    pub fetched_at: Instant,
    /// The source's own timestamp of the value (`datetime`), as given.
    pub datetime: Option<String>,
}

impl Reading {
    /// The `zone` label: the zone, or empty when unknown.
    pub fn zone_label(&self) -> &str {
        self.zone.as_deref().unwrap_or("")
    }
}

/// A parsed "latest carbon intensity" document (or bare number), already checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub grams_per_kwh: f64,
    pub zone: Option<String>,
    pub datetime: Option<String>,
    pub updated_at: Option<String>,
    pub is_estimated: Option<bool>,
}

/// Why a document or number cannot be used as intensity.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BadIntensity {
    #[error("neither JSON nor a number: {0:?}")]
    NotJson(String),
    #[error("no `carbonIntensity` number in {0:?}")]
    MissingField(String),
    #[error("`carbonIntensity` is not a finite number: {0}")]
    NotANumber(String),
    #[error("{0} g/kWh is negative")]
    Negative(f64),
    #[error("{0} g/kWh is above {MAX_GRAMS_PER_KWH} g/kWh, more than any grid (a unit mix-up?)")]
    TooHigh(f64),
}

impl BadIntensity {
    /// The `reason` label of `wattlet_carbon_intensity_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            BadIntensity::NotJson(_) => "not_json",
            BadIntensity::MissingField(_) => "missing_field",
            BadIntensity::NotANumber(_) => "nan",
            BadIntensity::Negative(_) => "negative",
            BadIntensity::TooHigh(_) => "too_high",
        }
    }
}

/// A value is intensity when it is finite and within 0..=2000 g/kWh.
pub fn check_value(v: f64) -> Result<f64, BadIntensity> {
    if !v.is_finite() {
        Err(BadIntensity::NotANumber(v.to_string()))
    } else if v < 0.0 {
        Err(BadIntensity::Negative(v))
    } else if v > MAX_GRAMS_PER_KWH {
        Err(BadIntensity::TooHigh(v))
    } else {
        Ok(v)
    }
}

/// The start of `bytes`, for error messages.
fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    if bytes.len() > MAX {
        format!("{s}…")
    } else {
        s.into_owned()
    }
}

/// Parses Electricity Maps' "latest carbon intensity" response (`zone`, `carbonIntensity`,
/// `datetime`, `updatedAt`, `isEstimated`; other fields ignored) or a bare number, and checks
/// the value. Never panics, whatever the bytes (a cargo-fuzz entry point).
pub fn parse_intensity_response(bytes: &[u8]) -> Result<Parsed, BadIntensity> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Number(n)) => bare(n.as_f64()),
        Ok(Value::Object(doc)) => document(&doc, bytes),
        Ok(other) => Err(BadIntensity::MissingField(snippet(
            other.to_string().as_bytes(),
        ))),
        Err(_) => {
            // Not JSON: a bare number in a form JSON rejects ("+412", "NaN", "4.1e2 ")?
            let text = std::str::from_utf8(bytes).map(str::trim);
            match text.ok().and_then(|t| t.parse::<f64>().ok()) {
                Some(v) => bare(Some(v)),
                None => Err(BadIntensity::NotJson(snippet(bytes))),
            }
        }
    }
}

fn bare(v: Option<f64>) -> Result<Parsed, BadIntensity> {
    let v = v.ok_or_else(|| BadIntensity::NotANumber("out of range".into()))?;
    Ok(Parsed {
        grams_per_kwh: check_value(v)?,
        zone: None,
        datetime: None,
        updated_at: None,
        is_estimated: None,
    })
}

fn document(doc: &serde_json::Map<String, Value>, bytes: &[u8]) -> Result<Parsed, BadIntensity> {
    let v = match doc.get("carbonIntensity") {
        None | Some(Value::Null) => return Err(BadIntensity::MissingField(snippet(bytes))),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| BadIntensity::NotANumber(n.to_string()))?,
        Some(other) => {
            return Err(BadIntensity::NotANumber(snippet(
                other.to_string().as_bytes(),
            )));
        }
    };
    let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(Parsed {
        grams_per_kwh: check_value(v)?,
        zone: text("zone"),
        datetime: text("datetime"),
        updated_at: text("updatedAt"),
        is_estimated: doc.get("isEstimated").and_then(Value::as_bool),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Electricity Maps' documented example, with the fields we do not read.
    const EXAMPLE: &str = r#"{
        "zone": "DE",
        "carbonIntensity": 302,
        "datetime": "2026-11-22T14:00:00.000Z",
        "updatedAt": "2026-11-22T13:47:06.283Z",
        "createdAt": "2026-11-19T14:48:40.209Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": true,
        "estimationMethod": "TIME_SLICER_AVERAGE"
    }"#;

    #[test]
    fn electricity_maps_document() {
        let p = parse_intensity_response(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(p.grams_per_kwh, 302.0);
        assert_eq!(p.zone.as_deref(), Some("DE"));
        assert_eq!(p.datetime.as_deref(), Some("2026-11-22T14:00:00.000Z"));
        assert_eq!(p.updated_at.as_deref(), Some("2026-11-22T13:47:06.283Z"));
        assert_eq!(p.is_estimated, Some(true));
    }

    #[test]
    fn bare_numbers() {
        assert_eq!(
            parse_intensity_response(b"412.5\n").unwrap().grams_per_kwh,
            412.5
        );
        assert_eq!(
            parse_intensity_response(b" +7 ").unwrap().grams_per_kwh,
            7.0
        );
        assert_eq!(parse_intensity_response(b"0").unwrap().grams_per_kwh, 0.0);
        assert_eq!(
            parse_intensity_response(b"2000").unwrap().grams_per_kwh,
            2000.0
        );
    }

    #[test]
    fn every_kind_of_bad_input_has_its_reason() {
        let reason = |s: &str| parse_intensity_response(s.as_bytes()).unwrap_err().reason();
        assert_eq!(reason("<html>502 Bad Gateway</html>"), "not_json");
        assert_eq!(reason(""), "not_json");
        assert_eq!(reason(r#"{"zone":"DE"}"#), "missing_field");
        assert_eq!(reason(r#"{"carbonIntensity":null}"#), "missing_field");
        assert_eq!(reason("[302]"), "missing_field");
        assert_eq!(reason(r#"{"carbonIntensity":"NaN"}"#), "nan");
        assert_eq!(reason(r#"{"carbonIntensity":"302"}"#), "nan");
        assert_eq!(reason(r#"{"carbonIntensity":true}"#), "nan");
        assert_eq!(reason("NaN"), "nan");
        assert_eq!(reason("-inf"), "nan");
        assert_eq!(reason("1e999"), "nan");
        assert_eq!(reason(r#"{"carbonIntensity":-3}"#), "negative");
        assert_eq!(reason("-0.5"), "negative");
        assert_eq!(reason(r#"{"carbonIntensity":2000.5}"#), "too_high");
        // lb/MWh by mistake (US grid ≈ 850 lb/MWh is fine; 4,400 is not a grid).
        assert_eq!(reason("4400"), "too_high");
    }

    #[test]
    fn optional_fields_of_the_wrong_type_are_ignored() {
        let p = parse_intensity_response(br#"{"carbonIntensity":5,"zone":7,"isEstimated":"yes"}"#)
            .unwrap();
        assert_eq!((p.grams_per_kwh, p.zone, p.is_estimated), (5.0, None, None));
    }

    proptest! {
        /// Any bytes at all: an answer, never a panic; an accepted value is always usable.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(p) = parse_intensity_response(&bytes) {
                prop_assert!(p.grams_per_kwh.is_finite());
                prop_assert!((0.0..=MAX_GRAMS_PER_KWH).contains(&p.grams_per_kwh));
            }
        }

        /// JSON-shaped garbage, which gets further into the parser than random bytes.
        #[test]
        fn never_panics_on_json_like_text(s in r#"[\{\}\[\]":,0-9a-zA-Z\.\-e ]{0,200}"#) {
            let _ = parse_intensity_response(s.as_bytes());
        }

        /// Any value in range comes back as it went in (to serde_json's last bit), in a
        /// document or bare.
        #[test]
        fn values_in_range_round_trip(v in 0.0f64..=2000.0) {
            let doc = format!(r#"{{"carbonIntensity":{v},"zone":"FR"}}"#);
            let back = parse_intensity_response(doc.as_bytes()).unwrap().grams_per_kwh;
            prop_assert!((back - v).abs() <= v * 1e-15, "{back} vs {v}");
            let back = parse_intensity_response(v.to_string().as_bytes()).unwrap().grams_per_kwh;
            prop_assert!((back - v).abs() <= v * 1e-15, "{back} vs {v}");
        }
    }
}
