//! Fixture trees for the sources' tests: files written under a fresh temporary directory,
//! removed on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use super::{ReadContext, SourceReading};

pub struct Tree(pub PathBuf);

/// A read at `secs` on the monotonic clock, without kernel counters.
pub fn at(secs: f64) -> ReadContext {
    ReadContext {
        at: std::time::Duration::from_secs_f64(secs),
        busy: None,
    }
}

/// The zones of a reading, for comparing with a literal.
pub fn zones(r: &SourceReading) -> Vec<(&str, f64)> {
    r.zones.iter().map(|(z, j)| (z.as_str(), *j)).collect()
}

impl Tree {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wattlet-fixture-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Tree(dir)
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` (plus a newline, as sysfs does) at `rel`, creating directories.
    pub fn file(&self, rel: &str, contents: &str) -> &Self {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("{contents}\n")).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) {
        fs::remove_file(self.0.join(rel)).unwrap();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
