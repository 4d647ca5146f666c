//! The HTTP(S) client of the intensity poller: hyper with rustls and ring, the stack kube
//! already builds; the system's CA roots, or webpki's where the system has none.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};

use crate::http_client::{self, Failure, Https, MAX_BODY};

/// A URL as logged and shown: without its query, which may hold a key (the zone there is
/// not worth the risk).
pub(crate) fn redacted(url: &Uri) -> String {
    let mut s = format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or("http"),
        url.authority().map_or("", |a| a.as_str()),
        url.path()
    );
    if url.query().is_some() {
        s.push_str("?…");
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("no complete answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}{hint}")]
    Status {
        url: String,
        status: StatusCode,
        hint: &'static str,
    },
    #[error("{url} sent more than {MAX_BODY} bytes")]
    TooLarge { url: String },
}

impl FetchError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            FetchError::Unreachable { .. } => "unreachable",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Status { .. } => "http_status",
            FetchError::TooLarge { .. } => "too_large",
        }
    }
}

impl FetchError {
    fn from_failure(f: Failure, url: String, timeout: Duration) -> Self {
        match f {
            Failure::Unreachable(detail) => FetchError::Unreachable { url, detail },
            Failure::Status(status) => FetchError::Status {
                url,
                status,
                hint: status_hint(status),
            },
            Failure::TooLarge => FetchError::TooLarge { url },
            Failure::Timeout => FetchError::Timeout { url, timeout },
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: Https,
}

impl HttpClient {
    /// A client for http and https URLs. `extra_roots` are trusted besides the system's (tests).
    pub(crate) fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(extra_roots))
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// GETs `url` (with an `auth-token` header if given) and returns the body of a 2xx answer;
    /// the whole exchange, body included, within `timeout`.
    pub(crate) async fn get(
        &self,
        url: &Uri,
        token: Option<HeaderValue>,
        timeout: Duration,
    ) -> Result<Bytes, FetchError> {
        let mut req = Request::get(url.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wattlet/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = token {
            req = req.header("auth-token", t);
        }
        let shown = redacted(url);
        let req = req
            .body(Empty::new())
            .map_err(|e| FetchError::Unreachable {
                url: shown.clone(),
                detail: e.to_string(),
            })?;
        let body = http_client::exchange(&self.client, req, timeout).await;
        body.map_err(|f| FetchError::from_failure(f, shown, timeout))
    }
}

fn status_hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            " (check the token in --carbon.token-file)"
        }
        StatusCode::TOO_MANY_REQUESTS => " (rate limited: raise --carbon.refresh)",
        StatusCode::NOT_FOUND => " (check the path and zone in --carbon.intensity-url)",
        _ => "",
    }
}

/// The system's CA roots and `extra`.
fn roots(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut store = http_client::system_roots("--carbon.intensity-url");
    store.add_parsable_certificates(extra.iter().cloned());
    store
}
