//! How the exporter's endpoint is protected: TLS, basic authentication and response headers
//! from `--web.config.file` (exporter-toolkit's format), and limits on what one client can hold.
//!
//! - `config`: the file, every key checked ([`WebConfig`], [`WebConfigError`]);
//! - `tls`: the rustls server configuration built from `tls_server_config`;
//! - `source`: the configuration in force, re-read when the file or a certificate changes
//!   ([`WebSource`]);
//! - `guard`: the layer around the whole router — methods, bodies, rate limit, basic
//!   authentication, headers ([`Guard`]);
//! - `limits`: connections in all and per client, timeouts, header size ([`ConnectionLimits`]);
//! - `server`: the accept loop, TLS handshakes, HTTP/1.1, graceful shutdown.

mod config;
mod guard;
mod limits;
mod server;
mod source;
#[cfg(test)]
mod tests;
mod tls;

use std::{path::Path, sync::Arc};

pub use config::{ClientAuth, Pem, RateLimit, TlsSettings, TlsVersion, WebConfig, WebConfigError};
pub use guard::{Guard, HEALTH_PATHS};
pub use limits::{ConnectionLimits, MAX_HEADER_BYTES, Timeouts};
pub(crate) use server::run;
pub use source::{Active, WebSource};

/// Everything the server needs besides its routes.
pub struct Web {
    pub source: Option<Arc<WebSource>>,
    pub health_unauthenticated: bool,
    pub limits: ConnectionLimits,
    pub timeouts: Timeouts,
}

impl Web {
    /// Loads `--web.config.file` (if given): a bad file is an error naming its key.
    pub fn open(
        config_file: Option<&Path>,
        health_unauthenticated: bool,
        max_connections: usize,
        max_connections_per_client: usize,
    ) -> Result<Self, WebConfigError> {
        let source = config_file.map(WebSource::open).transpose()?.map(Arc::new);
        Ok(Self {
            source,
            health_unauthenticated,
            limits: ConnectionLimits::new(max_connections, max_connections_per_client),
            timeouts: Timeouts::default(),
        })
    }

    /// `https` when the file configures TLS.
    pub fn scheme(&self) -> &'static str {
        if self.source.as_ref().is_some_and(|s| s.tls()) {
            "https"
        } else {
            "http"
        }
    }

    pub(crate) fn guard(&self) -> Guard {
        Guard::new(self.source.clone(), self.health_unauthenticated)
    }
}
