//! Built-in location-based grid intensity per cloud region and per country, for
//! `--carbon.zone` or the node's `topology.kubernetes.io/region`. Yearly averages: a live
//! source (`--carbon.intensity-url`) is better wherever one is available.
//!
//! Every figure is copied from a public dataset named beside it, with its year. Nothing here
//! is estimated by us. Where a provider publishes no figure for a region, the region is absent
//! and its country's row can be used instead.

/// One row of the table.
#[derive(Debug, PartialEq)]
pub struct Factor {
    /// The name `--carbon.zone` takes: a cloud region as the provider (and the node label)
    /// spells it, or an ISO 3166-1 alpha-2 country code.
    pub zone: &'static str,
    /// gCO2e per kWh.
    pub grams_per_kwh: f64,
    /// The public source and year of the figure.
    pub source: &'static str,
    pub kind: ZoneKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneKind {
    Aws,
    Azure,
    Gcp,
    Country,
}

impl ZoneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneKind::Aws => "AWS regions",
            ZoneKind::Azure => "Azure regions",
            ZoneKind::Gcp => "Google Cloud regions",
            ZoneKind::Country => "Countries (ISO 3166-1 alpha-2)",
        }
    }
}

// Sources. Cloud Carbon Footprint's methodology, appendix V "Grid emissions factors"
// (microsite/docs/Methodology.md of cloud-carbon-footprint/cloud-carbon-footprint at commit
// 1559c186, the revision citing carbonfootprint.com's March 2022 factors), in metric t/kWh,
// here × 10^6 = g/kWh. CCF takes each figure from one of three sources:
const CCF_EGRID: &str = "US EPA eGRID by NERC region, via Cloud Carbon Footprint methodology \
    appendix V (2022 revision; CCF names no eGRID edition)";
const CCF_CFP: &str = "carbonfootprint.com factors for 2021 electricity (v1.1, March 2022), via \
    Cloud Carbon Footprint methodology appendix V";
const CCF_EEA: &str = "European Environment Agency CO2 emission intensity, via Cloud Carbon \
    Footprint methodology appendix V (2022 revision; CCF names no EEA edition)";
// Google's own per-region grid carbon intensity (location-based, not its CFE-adjusted figure):
// GoogleCloudPlatform/region-carbon-info, data/yearly/2025.csv, "Grid carbon intensity".
const GOOGLE_2025: &str = "Google Cloud region-carbon-info, grid carbon intensity, 2025";
// Ember's yearly electricity data (lifecycle emissions intensity of generation, the latest
// year Ember had for each country), as published in The Green Web Foundation's CO2.js
// (data/output/average-intensities.json at commit 6628f83f, generated from Ember's
// country_overview_yearly). The year is in each row's source.
const EMBER_2024: &str = "Ember yearly electricity data, 2024";
const EMBER_2023: &str = "Ember yearly electricity data, 2023";

/// The world average: Ember's 2024 figure for the world (same CO2.js file, row "World";
/// Ember's Global Electricity Review 2025 reports 473 g/kWh), used with `source="default"`.
pub const WORLD_AVERAGE: f64 = 473.05;
pub const WORLD_AVERAGE_SOURCE: &str = "Ember yearly electricity data, world, 2024";

const fn aws(zone: &'static str, grams_per_kwh: f64, source: &'static str) -> Factor {
    Factor {
        zone,
        grams_per_kwh,
        source,
        kind: ZoneKind::Aws,
    }
}

const fn azure(zone: &'static str, grams_per_kwh: f64, source: &'static str) -> Factor {
    Factor {
        zone,
        grams_per_kwh,
        source,
        kind: ZoneKind::Azure,
    }
}

const fn gcp(zone: &'static str, grams_per_kwh: f64) -> Factor {
    Factor {
        zone,
        grams_per_kwh,
        source: GOOGLE_2025,
        kind: ZoneKind::Gcp,
    }
}

const fn country(zone: &'static str, grams_per_kwh: f64, source: &'static str) -> Factor {
    Factor {
        zone,
        grams_per_kwh,
        source,
        kind: ZoneKind::Country,
    }
}

pub(crate) static TABLE: &[Factor] = &[
    // AWS (CCF appendix V, "AWS").
    aws("us-east-1", 379.069, CCF_EGRID), // N. Virginia, NERC SERC
    aws("us-east-2", 410.608, CCF_EGRID), // Ohio, NERC RFC
    aws("us-west-1", 322.167, CCF_EGRID), // N. California, NERC WECC
    aws("us-west-2", 322.167, CCF_EGRID), // Oregon, NERC WECC
    aws("us-gov-east-1", 379.069, CCF_EGRID), // NERC SERC
    aws("us-gov-west-1", 322.167, CCF_EGRID), // NERC WECC
    aws("af-south-1", 900.6, CCF_CFP),    // South Africa
    aws("ap-east-1", 710.0, CCF_CFP),     // Hong Kong
    aws("ap-south-1", 708.2, CCF_CFP),    // India
    aws("ap-northeast-3", 465.8, CCF_CFP), // Japan
    aws("ap-northeast-2", 415.6, CCF_CFP), // South Korea
    aws("ap-southeast-1", 408.0, CCF_CFP), // Singapore
    aws("ap-southeast-2", 760.0, CCF_CFP), // Australia
    aws("ap-northeast-1", 465.8, CCF_CFP), // Japan
    aws("ca-central-1", 120.0, CCF_CFP),  // Canada
    aws("cn-north-1", 537.4, CCF_CFP),    // China
    aws("cn-northwest-1", 537.4, CCF_CFP), // China
    aws("eu-central-1", 311.0, CCF_EEA),  // Germany
    aws("eu-west-1", 278.6, CCF_EEA),     // Ireland
    aws("eu-west-2", 225.0, CCF_EEA),     // England
    aws("eu-south-1", 213.4, CCF_EEA),    // Italy
    aws("eu-west-3", 51.1, CCF_EEA),      // France
    aws("eu-north-1", 8.8, CCF_EEA),      // Sweden
    aws("me-south-1", 505.9, CCF_CFP),    // Bahrain
    aws("sa-east-1", 61.7, CCF_CFP),      // Brazil
    // Azure (CCF appendix V, "Azure"), under the names the API and AKS node labels use
    // ("East US" is eastus). Left out: CCF's staging/EUAP duplicates, its Brazil rows
    // (1.2 g/kWh, a figure 50 times below its own sa-east-1 row) and its Switzerland rows (the
    // same 5.67 as Sweden); use the country rows BR and CH for those.
    azure("centralus", 426.254, CCF_EGRID), // Iowa, NERC MRO
    azure("eastus", 379.069, CCF_EGRID),    // Virginia, NERC SERC
    azure("eastus2", 379.069, CCF_EGRID),   // Virginia, NERC SERC
    azure("northcentralus", 410.608, CCF_EGRID), // Illinois, NERC RFC
    azure("southcentralus", 373.231, CCF_EGRID), // Texas, NERC TRE
    azure("westcentralus", 322.167, CCF_EGRID), // Wyoming, NERC WECC
    azure("westus", 322.167, CCF_EGRID),    // California, NERC WECC
    azure("westus2", 322.167, CCF_EGRID),   // Washington, NERC WECC
    azure("westus3", 322.167, CCF_EGRID),   // Arizona, NERC WECC
    azure("eastasia", 710.0, CCF_CFP),      // Hong Kong
    azure("southeastasia", 408.0, CCF_CFP), // Singapore
    azure("southafricanorth", 900.6, CCF_CFP), // Johannesburg
    azure("southafricawest", 900.6, CCF_CFP), // South Africa
    azure("australiacentral", 790.0, CCF_CFP), // Canberra
    azure("australiacentral2", 790.0, CCF_CFP), // Canberra
    azure("australiaeast", 790.0, CCF_CFP), // New South Wales
    azure("australiasoutheast", 960.0, CCF_CFP), // Victoria
    azure("japaneast", 465.8, CCF_CFP),     // Tokyo, Saitama
    azure("japanwest", 465.8, CCF_CFP),     // Osaka
    azure("koreasouth", 415.6, CCF_CFP),    // Korea
    azure("centralindia", 708.2, CCF_CFP),  // Pune
    azure("southindia", 708.2, CCF_CFP),    // Chennai
    azure("westindia", 708.2, CCF_CFP),     // Mumbai
    azure("northeurope", 278.6, CCF_EEA),   // Ireland
    azure("westeurope", 328.4, CCF_EEA),    // Netherlands
    azure("francecentral", 51.28, CCF_CFP), // Paris
    azure("francesouth", 51.28, CCF_CFP),   // France
    azure("swedencentral", 5.67, CCF_CFP),  // Gävle and Sandviken
    azure("uksouth", 225.0, CCF_EEA),       // London
    azure("ukwest", 228.0, CCF_EEA),        // Cardiff
    azure("germanywestcentral", 338.66, CCF_CFP), // Frankfurt
    azure("germanynorth", 338.66, CCF_CFP), // Germany
    azure("norwayeast", 7.62, CCF_CFP),     // Oslo
    azure("norwaywest", 7.62, CCF_CFP),     // Norway
    azure("uaenorth", 404.1, CCF_CFP),      // Dubai
    azure("uaecentral", 404.1, CCF_CFP),    // United Arab Emirates
    azure("canadacentral", 120.0, CCF_CFP), // Toronto
    azure("canadaeast", 120.0, CCF_CFP),    // Quebec City
    // Google Cloud (Google region-carbon-info, 2025). Left out: europe-west5, listed without
    // a location.
    gcp("africa-south1", 641.42),          // Johannesburg
    gcp("asia-east1", 427.95),             // Taiwan
    gcp("asia-east2", 488.52),             // Hong Kong
    gcp("asia-northeast1", 449.23),        // Tokyo
    gcp("asia-northeast2", 298.92),        // Osaka
    gcp("asia-northeast3", 359.05),        // Seoul
    gcp("asia-south1", 598.45),            // Mumbai
    gcp("asia-south2", 472.55),            // Delhi
    gcp("asia-southeast1", 365.66),        // Singapore
    gcp("asia-southeast2", 587.8),         // Jakarta
    gcp("asia-southeast3", 364.68),        // Bangkok
    gcp("australia-southeast1", 468.34),   // Sydney
    gcp("australia-southeast2", 415.89),   // Melbourne
    gcp("europe-central2", 498.57),        // Warsaw
    gcp("europe-north1", 29.84),           // Finland
    gcp("europe-north2", 19.39),           // Stockholm
    gcp("europe-southwest1", 95.75),       // Madrid
    gcp("europe-west1", 126.43),           // Belgium
    gcp("europe-west2", 109.39),           // London
    gcp("europe-west3", 275.81),           // Frankfurt
    gcp("europe-west4", 194.35),           // Eemshaven
    gcp("europe-west6", 21.2),             // Zürich
    gcp("europe-west8", 202.03),           // Milan
    gcp("europe-west9", 15.83),            // Paris
    gcp("europe-west10", 275.81),          // Berlin
    gcp("europe-west12", 202.03),          // Turin
    gcp("me-central1", 370.0),             // Doha
    gcp("me-central2", 381.29),            // Dammam
    gcp("me-west1", 380.95),               // Tel Aviv
    gcp("northamerica-northeast1", 11.36), // Montréal
    gcp("northamerica-northeast2", 74.2),  // Toronto
    gcp("northamerica-south1", 293.25),    // Mexico
    gcp("southamerica-east1", 73.25),      // São Paulo
    gcp("southamerica-west1", 209.94),     // Santiago
    gcp("us-central1", 431.95),            // Iowa
    gcp("us-central2", 417.39),            // Oklahoma
    gcp("us-east1", 579.44),               // South Carolina
    gcp("us-east2", 391.2),                // Georgia
    gcp("us-east4", 343.48),               // Northern Virginia
    gcp("us-east5", 343.48),               // Columbus
    gcp("us-east7", 339.89),               // Alabama and Tennessee
    gcp("us-south1", 299.13),              // Dallas
    gcp("us-west1", 97.85),                // Oregon
    gcp("us-west2", 149.91),               // Los Angeles
    gcp("us-west3", 567.51),               // Salt Lake City
    gcp("us-west4", 360.0),                // Las Vegas
    // Countries (Ember via CO2.js; the year each row is for is in its source).
    country("US", 383.55, EMBER_2024), // United States
    country("CA", 174.81, EMBER_2024), // Canada
    country("MX", 484.83, EMBER_2024), // Mexico
    country("BR", 103.21, EMBER_2024), // Brazil
    country("AR", 358.95, EMBER_2024), // Argentina
    country("CL", 265.52, EMBER_2024), // Chile
    country("CO", 285.8, EMBER_2024),  // Colombia
    country("GB", 210.89, EMBER_2024), // United Kingdom
    country("IE", 279.7, EMBER_2024),  // Ireland
    country("FR", 44.18, EMBER_2024),  // France
    country("DE", 344.14, EMBER_2024), // Germany
    country("NL", 253.31, EMBER_2024), // Netherlands
    country("BE", 117.58, EMBER_2024), // Belgium
    country("LU", 134.62, EMBER_2024), // Luxembourg
    country("CH", 36.6, EMBER_2024),   // Switzerland
    country("AT", 102.62, EMBER_2024), // Austria
    country("IT", 287.53, EMBER_2024), // Italy
    country("ES", 146.15, EMBER_2024), // Spain
    country("PT", 112.29, EMBER_2024), // Portugal
    country("SE", 35.82, EMBER_2024),  // Sweden
    country("NO", 30.75, EMBER_2024),  // Norway
    country("FI", 72.25, EMBER_2024),  // Finland
    country("DK", 143.3, EMBER_2024),  // Denmark
    country("PL", 614.98, EMBER_2024), // Poland
    country("CZ", 413.86, EMBER_2024), // Czechia
    country("GR", 319.76, EMBER_2024), // Greece
    country("HU", 182.82, EMBER_2024), // Hungary
    country("RO", 245.55, EMBER_2024), // Romania
    country("BG", 264.21, EMBER_2024), // Bulgaria
    country("TR", 469.7, EMBER_2024),  // Türkiye
    country("IN", 708.32, EMBER_2024), // India
    country("CN", 559.55, EMBER_2024), // China
    country("JP", 482.32, EMBER_2024), // Japan
    country("KR", 414.27, EMBER_2024), // South Korea
    country("TW", 635.65, EMBER_2024), // Taiwan
    country("HK", 681.99, EMBER_2023), // Hong Kong
    country("SG", 498.74, EMBER_2024), // Singapore
    country("ID", 682.43, EMBER_2023), // Indonesia
    country("MY", 609.85, EMBER_2024), // Malaysia
    country("TH", 554.5, EMBER_2024),  // Thailand
    country("PH", 613.38, EMBER_2024), // Philippines
    country("VN", 471.16, EMBER_2024), // Viet Nam
    country("AU", 551.59, EMBER_2024), // Australia
    country("NZ", 120.11, EMBER_2024), // New Zealand
    country("ZA", 708.88, EMBER_2024), // South Africa
    country("NG", 507.85, EMBER_2024), // Nigeria
    country("KE", 88.79, EMBER_2024),  // Kenya
    country("EG", 571.92, EMBER_2024), // Egypt
    country("AE", 492.7, EMBER_2023),  // United Arab Emirates
    country("SA", 696.31, EMBER_2023), // Saudi Arabia
    country("QA", 602.83, EMBER_2024), // Qatar
    country("BH", 902.41, EMBER_2023), // Bahrain
    country("IL", 567.26, EMBER_2023), // Israel
];

/// Zone names compare without case or spaces ("West Europe", "westeurope"; "de", "DE").
fn normalize(zone: &str) -> String {
    zone.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The table's factor for a zone (a cloud region or a country code), if it has one. The
/// Kubernetes layer can pass the node's `topology.kubernetes.io/region` label here.
pub fn lookup(zone: Option<&str>) -> Option<&'static Factor> {
    let want = normalize(zone?);
    TABLE.iter().find(|f| normalize(f.zone) == want)
}

/// Up to `n` known zones that look like `zone` (a typo, another provider's spelling).
pub fn close_matches(zone: &str, n: usize) -> Vec<&'static str> {
    let want = normalize(zone);
    let mut scored: Vec<(usize, &'static str)> = TABLE
        .iter()
        .map(|f| {
            let have = normalize(f.zone);
            // Substrings count, except two-letter country codes (inside every region name).
            let long = want.len() >= 3 && have.len() >= 3;
            let d = if long && (have.contains(&want) || want.contains(&have)) {
                0
            } else {
                edit_distance(&want, &have)
            };
            (d, f.zone)
        })
        .filter(|(d, _)| *d <= 2.max(want.len() / 4))
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, z)| z).collect()
}

/// Levenshtein distance, on chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diag = above;
        }
    }
    row[b.len()]
}

/// Every known zone, one line per kind, for error messages and `wattlet check`.
pub fn known_zones() -> String {
    [
        ZoneKind::Aws,
        ZoneKind::Azure,
        ZoneKind::Gcp,
        ZoneKind::Country,
    ]
    .iter()
    .map(|k| {
        let zones: Vec<&str> = TABLE
            .iter()
            .filter(|f| f.kind == *k)
            .map(|f| f.zone)
            .collect();
        format!("{}: {}", k.as_str(), zones.join(" "))
    })
    .collect::<Vec<_>>()
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_row_is_a_usable_intensity_with_a_source_and_year() {
        let mut seen = HashSet::new();
        for f in TABLE {
            assert!(seen.insert(normalize(f.zone)), "{} twice", f.zone);
            assert!(
                super::super::reading::check_value(f.grams_per_kwh).is_ok(),
                "{f:?}"
            );
            assert!(
                f.source.contains("20"),
                "{}: the source names no year",
                f.zone
            );
        }
        for f in TABLE.iter().filter(|f| f.kind == ZoneKind::Country) {
            assert!(f.zone.len() == 2 && f.zone.chars().all(|c| c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(lookup(Some("us-east-1")).unwrap().grams_per_kwh, 379.069);
        assert_eq!(lookup(Some("eu-north-1")).unwrap().grams_per_kwh, 8.8);
        assert_eq!(lookup(Some("europe-west9")).unwrap().grams_per_kwh, 15.83);
        assert_eq!(lookup(Some("West Europe")).unwrap().zone, "westeurope");
        assert_eq!(lookup(Some("de")).unwrap().zone, "DE");
        assert_eq!(lookup(Some(" FR ")).unwrap().grams_per_kwh, 44.18);
        assert_eq!(lookup(Some("mars-north-1")), None);
        assert_eq!(lookup(Some("")), None);
        assert_eq!(lookup(None), None);
        // GCP and AWS spell their regions differently; both are known and distinct.
        assert_ne!(lookup(Some("us-east1")), lookup(Some("us-east-1")));
    }

    #[test]
    fn close_matches_suggest_the_intended_zone() {
        assert!(close_matches("us-east-9", 5).contains(&"us-east-1"));
        assert!(close_matches("useast1", 5).contains(&"us-east1"));
        assert!(close_matches("westeurop", 5).contains(&"westeurope"));
        assert!(close_matches("zzzzzzzzzzzzzzzz", 5).is_empty());
    }

    #[test]
    fn known_zones_lists_every_row() {
        let all = known_zones();
        for f in TABLE {
            assert!(all.contains(f.zone), "{}", f.zone);
        }
        assert_eq!(all.lines().count(), 4);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
