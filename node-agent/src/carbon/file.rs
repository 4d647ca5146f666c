//! `--carbon.intensity-file`: intensity from a file someone else keeps up to date, re-read
//! when it changes (its modification time, size or inode), not at every interval.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use log::info;

use super::{
    SourceKind,
    health::Health,
    reading::{Parsed, parse_intensity_response},
};

/// What identifies one version of the file (or why there is none).
#[derive(Clone, Debug, PartialEq)]
enum Version {
    Present {
        modified: Option<SystemTime>,
        len: u64,
        ino: u64,
    },
    Missing(std::io::ErrorKind),
}

#[derive(Debug, Default)]
struct State {
    version: Option<Version>,
    /// The last good value and when it was read.
    good: Option<(Parsed, Instant)>,
    /// The file as it is now holds `good`.
    holds_good: bool,
    /// When the file was last seen holding a good value.
    confirmed: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct FileSource {
    path: PathBuf,
    max_age: Duration,
    state: Mutex<State>,
}

impl FileSource {
    /// `max_age`: how long the last good value stays in force after the file stops holding a
    /// good one (half-written, deleted, garbage), as for the API.
    pub(crate) fn new(path: PathBuf, max_age: Duration) -> Self {
        Self {
            path,
            max_age,
            state: Mutex::default(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The value in force at `now`, and when it was read. Looks at the file's metadata, and
    /// reads the file only when that changed: a bad version is counted once, not per interval.
    pub(crate) fn value(&self, now: Instant, health: &Health) -> Option<(Parsed, Instant)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let version = match fs::metadata(&self.path) {
            Ok(m) => Version::Present {
                modified: m.modified().ok(),
                len: m.len(),
                ino: m.ino(),
            },
            Err(e) => Version::Missing(e.kind()),
        };
        if st.version.as_ref() != Some(&version) {
            let was_good = st.holds_good;
            st.holds_good = self.reread(&mut st.good, &version, now, health);
            if let Some((p, _)) = st.good.as_ref().filter(|_| st.holds_good && !was_good) {
                info!(
                    "carbon intensity from {}: {} g/kWh",
                    self.path.display(),
                    p.grams_per_kwh
                );
            }
            st.version = Some(version);
        }
        if st.holds_good {
            st.confirmed = Some(now);
        }
        let fresh = st
            .confirmed
            .is_some_and(|c| now.saturating_duration_since(c) <= self.max_age);
        st.good.clone().filter(|_| fresh)
    }

    /// Reads and checks the file; on success the value replaces `good`.
    fn reread(
        &self,
        good: &mut Option<(Parsed, Instant)>,
        version: &Version,
        now: Instant,
        health: &Health,
    ) -> bool {
        let shown = self.path.display();
        let parsed = match version {
            Version::Missing(kind) => Err(("unreadable", format!("{shown}: {kind}"))),
            Version::Present { .. } => fs::read(&self.path)
                .map_err(|e| ("unreadable", format!("{shown}: {e}")))
                .and_then(|b| {
                    parse_intensity_response(&b).map_err(|e| (e.reason(), format!("{shown}: {e}")))
                }),
        };
        match parsed {
            Ok(p) => {
                *good = Some((p, now));
                true
            }
            Err((reason, detail)) => {
                health.failed(SourceKind::File, reason, &detail);
                false
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temp dir.
    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wattlet-carbon-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Replaces the file's contents the way a careful writer does: write aside, rename.
    pub(crate) fn put(path: &Path, contents: &str) {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, contents).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    fn grams(v: Option<(Parsed, Instant)>) -> Option<f64> {
        v.map(|(p, _)| p.grams_per_kwh)
    }

    #[test]
    fn rereads_when_the_file_changes() {
        let dir = temp_dir("file");
        let path = dir.join("intensity.json");
        let health = Health::default();
        let src = FileSource::new(path.clone(), Duration::from_secs(3600));
        let t0 = Instant::now();
        assert_eq!(grams(src.value(t0, &health)), None, "no file yet");
        assert_eq!(health.count(SourceKind::File, "unreadable"), 1);
        assert_eq!(grams(src.value(t0, &health)), None);
        assert_eq!(
            health.count(SourceKind::File, "unreadable"),
            1,
            "counted once"
        );

        put(
            &path,
            r#"{"zone":"DE","carbonIntensity":302,"isEstimated":false}"#,
        );
        let (p, read_at) = src.value(t0, &health).unwrap();
        assert_eq!((p.grams_per_kwh, p.zone.as_deref()), (302.0, Some("DE")));
        assert_eq!(read_at, t0);

        put(&path, "288.5\n");
        assert_eq!(grams(src.value(t0, &health)), Some(288.5), "bare number");

        // In place, same size: the inode stays but the modification time moves.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&path, "277.5\n").unwrap();
        assert_eq!(grams(src.value(t0, &health)), Some(277.5));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_versions_are_counted_once_and_the_last_good_value_ages_out() {
        let dir = temp_dir("file-bad");
        let path = dir.join("intensity");
        let health = Health::default();
        let max_age = Duration::from_secs(600);
        let src = FileSource::new(path.clone(), max_age);
        let t0 = Instant::now();
        put(&path, "100");
        assert_eq!(grams(src.value(t0, &health)), Some(100.0));
        // Unchanged for a long time: still good.
        let later = t0 + 10 * max_age;
        assert_eq!(grams(src.value(later, &health)), Some(100.0));

        for (contents, reason) in [
            ("<html>", "not_json"),
            (r#"{"zone":"DE"}"#, "missing_field"),
            ("-5", "negative"),
            (r#"{"carbonIntensity":"NaN"}"#, "nan"),
            ("2001", "too_high"),
        ] {
            put(&path, contents);
            assert_eq!(grams(src.value(later, &health)), Some(100.0), "{contents}");
            assert_eq!(grams(src.value(later, &health)), Some(100.0));
            assert_eq!(health.count(SourceKind::File, reason), 1, "{contents}");
        }
        // The last good value was last confirmed at `later`; past max-age it is gone.
        let expired = later + max_age + Duration::from_secs(1);
        assert_eq!(grams(src.value(expired, &health)), None);
        put(&path, "90");
        assert_eq!(grams(src.value(expired, &health)), Some(90.0), "recovered");
        fs::remove_dir_all(&dir).unwrap();
    }
}
