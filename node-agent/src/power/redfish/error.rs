//! Why the BMC could not be read, in words that name the resource or the flag and the fix.

use std::time::Duration;

use http::StatusCode;

use crate::http_client::MAX_BODY;

#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    /// Flags that do not go together.
    #[error("{0}")]
    Flags(String),
    #[error("starting the Redfish reader thread: {0}")]
    Thread(std::io::Error),
    #[error("setting up TLS for --power.redfish.url: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("no complete answer from {url} within {timeout:?} (--power.redfish.timeout)")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}{hint}")]
    Status {
        url: String,
        status: StatusCode,
        hint: &'static str,
    },
    #[error("{url} sent more than {MAX_BODY} bytes: not a Redfish resource")]
    TooLarge { url: String },
    #[error("{url} did not answer JSON ({detail}): is --power.redfish.url a Redfish service?")]
    NotJson { url: String, detail: String },
    #[error("{url}: {what}")]
    Shape { url: String, what: String },
    #[error("{0}")]
    NoSystem(String),
    #[error(
        "system {system}: no power reading for it in its chassis ({})",
        .reasons.join("; ")
    )]
    NoPower {
        system: String,
        reasons: Vec<String>,
    },
    /// A failed background read, as it was when it failed (for the measuring loop's log).
    #[error("reading the BMC: {0}")]
    Poll(String),
}

impl RedfishError {
    /// Wrong credentials or not allowed: retrying will not help.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            RedfishError::Status { status, .. }
                if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN
        )
    }
}

/// What to do about an HTTP status.
pub(crate) fn status_hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => {
            " (wrong user name or password: check --power.redfish.credentials-file)"
        }
        StatusCode::FORBIDDEN => {
            " (the account may not read this resource: give it the ReadOnly role or better)"
        }
        StatusCode::NOT_FOUND => " (check the path in --power.redfish.url)",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::INTERNAL_SERVER_ERROR => {
            " (the BMC is busy or failing: read again later)"
        }
        _ => "",
    }
}
