//! The web configuration in force, re-read when the file, or a certificate, key or CA file it
//! names, changes: rotated certificates are used from the next handshake on, without a restart.
//!
//! Each new connection and request asks for the [`Active`] configuration; that costs a `stat` of
//! each watched file. A file that fails to load is reported once and the last good
//! configuration stays in force (a half-written rotation does not take the endpoint down).

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use log::{info, warn};
use rustls::ServerConfig;

use super::{
    config::{Pem, WebConfig, WebConfigError},
    tls,
};

/// One loaded configuration: the file's settings and, with TLS, the rustls configuration built
/// from them (certificates read).
#[derive(Debug)]
pub struct Active {
    pub config: WebConfig,
    pub tls: Option<Arc<ServerConfig>>,
}

/// What identifies a file's content without reading it: a replaced (renamed-over, or a
/// Kubernetes secret's swapped symlink) or rewritten file changes one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

struct State {
    active: Arc<Active>,
    /// The watched files as they were when `active` was loaded.
    loaded: Vec<Option<Stamp>>,
    /// The watched files as they were at the last failed reload (reported once).
    failed: Option<Vec<Option<Stamp>>>,
}

/// `--web.config.file`, loaded at start and re-read when it or a file it names changes.
pub struct WebSource {
    path: PathBuf,
    tls: bool,
    state: Mutex<State>,
}

impl WebSource {
    /// Loads the file and everything it names; any problem is an error naming the key.
    pub fn open(path: &Path) -> Result<Self, WebConfigError> {
        let active = load(path)?;
        let loaded = stamps(&watched(path, &active.config));
        Ok(Self {
            path: path.to_owned(),
            tls: active.tls.is_some(),
            state: Mutex::new(State {
                active: Arc::new(active),
                loaded,
                failed: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the endpoint speaks TLS (decided at start: switching needs a restart).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The configuration in force, reloaded first if a watched file changed.
    pub fn current(&self) -> Arc<Active> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamps(&watched(&self.path, &state.active.config));
        if now == state.loaded || state.failed.as_ref() == Some(&now) {
            return state.active.clone();
        }
        match self.reload() {
            Ok(active) => {
                info!("web config {}: reloaded", self.path.display());
                state.loaded = stamps(&watched(&self.path, &active.config));
                state.active = Arc::new(active);
                state.failed = None;
            }
            Err(e) => {
                warn!("{e:#}; the previous web configuration stays in force");
                state.failed = Some(now);
            }
        }
        state.active.clone()
    }

    fn reload(&self) -> Result<Active, anyhow::Error> {
        let active = load(&self.path)?;
        if active.tls.is_some() != self.tls {
            anyhow::bail!(
                "web config {}: TLS was turned {} while running: restart the agent to switch \
                 between HTTP and HTTPS",
                self.path.display(),
                if self.tls { "off" } else { "on" }
            );
        }
        Ok(active)
    }
}

/// Reads the file and builds its TLS configuration; a TLS problem names its key.
fn load(path: &Path) -> Result<Active, WebConfigError> {
    let config = WebConfig::load(path)?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()
        .map_err(|e| WebConfigError::Invalid {
            path: path.to_owned(),
            key: e.key.to_owned(),
            why: e.why,
        })?;
    Ok(Active { config, tls })
}

/// The file itself and every certificate, key and CA file it names.
fn watched(path: &Path, config: &WebConfig) -> Vec<PathBuf> {
    let mut files = vec![path.to_owned()];
    if let Some(t) = &config.tls {
        for pem in [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Pem::File(f) = pem {
                files.push(f.clone());
            }
        }
    }
    files
}

fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    files.iter().map(|f| stamp(f)).collect()
}
