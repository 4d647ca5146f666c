//! Failures of the intensity sources: counted per source and reason, logged once per kind.

use std::{
    collections::BTreeMap,
    fmt::Display,
    sync::{Mutex, MutexGuard},
};

use log::warn;

use super::SourceKind;

/// How often one source failed for one reason: a sample of
/// `wattlet_carbon_intensity_errors_total{source, reason}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCount {
    pub source: SourceKind,
    pub reason: &'static str,
    pub count: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Health {
    counts: Mutex<BTreeMap<(SourceKind, &'static str), u64>>,
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(SourceKind, &'static str), u64>> {
        // A panic elsewhere while counting leaves the counts usable.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a failure, and logs it the first time this source fails for this reason: a
    /// source that stays broken fails at every poll, and the counter says how often.
    pub(crate) fn failed(&self, source: SourceKind, reason: &'static str, detail: &dyn Display) {
        let first = {
            let mut counts = self.lock();
            let n = counts.entry((source, reason)).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            warn!(
                "carbon intensity from {source} not used ({reason}): {detail}; further \
                 {reason} failures of {source} are counted in \
                 wattlet_carbon_intensity_errors_total, not logged"
            );
        }
    }

    pub(crate) fn counts(&self) -> Vec<ErrorCount> {
        self.lock()
            .iter()
            .map(|(&(source, reason), &count)| ErrorCount {
                source,
                reason,
                count,
            })
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn count(&self, source: SourceKind, reason: &str) -> u64 {
        self.lock()
            .iter()
            .filter(|((s, r), _)| *s == source && *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_source_and_reason() {
        let h = Health::default();
        h.failed(SourceKind::Api, "timeout", &"slow");
        h.failed(SourceKind::Api, "timeout", &"slow");
        h.failed(SourceKind::File, "not_json", &"junk");
        assert_eq!(h.count(SourceKind::Api, "timeout"), 2);
        assert_eq!(h.count(SourceKind::Api, "not_json"), 0);
        assert_eq!(
            h.counts(),
            [
                ErrorCount {
                    source: SourceKind::Api,
                    reason: "timeout",
                    count: 2
                },
                ErrorCount {
                    source: SourceKind::File,
                    reason: "not_json",
                    count: 1
                },
            ]
        );
    }
}
