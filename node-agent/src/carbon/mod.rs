//! Carbon: the grid's intensity and what multiplies into emissions (SCI's I and M), and the
//! pure math from joules to grams.
//!
//! - [`Intensity`] is the intensity in force, read once per interval by the measuring loop:
//!   the first configured source with a good value, in the order `api`
//!   (`--carbon.intensity-url`, polled in the background, its last good value kept for
//!   `--carbon.max-age`), `file` (`--carbon.intensity-file`), `static` (`--carbon.intensity`),
//!   `table` ([`table`]: `--carbon.zone` or the node's region), `default` (the world average).
//!   Bad input from any source is logged once per kind, counted ([`ErrorCount`]) and never
//!   used.
//! - [`emissions`] turns an interval's energy split into grams at the intensity in force
//!   during that interval, and shares the server's embodied footprint by CPU time.
//! - [`CarbonArgs`] are the `--carbon.*` flags, checked at parse time.

mod api;
mod args;
pub mod emissions;
mod file;
mod health;
mod http;
mod intensity;
mod reading;
pub mod table;

#[cfg(test)]
mod tests;

pub use args::{CarbonArgs, Zone};
pub use emissions::{
    GramsSplit, embodied, embodied_grams_per_second, grams, grams_per_joule, operational,
};
pub use health::ErrorCount;
pub use intensity::{CarbonCheck, CarbonError, Intensity, check};
pub use reading::{
    BadIntensity, MAX_GRAMS_PER_KWH, Parsed, Reading, SourceKind, parse_intensity_response,
};
pub use table::{Factor, WORLD_AVERAGE, lookup};
