//! The HTTP(S) client of the intensity poller: hyper with rustls and ring, the stack kube
//! already builds; the system's CA roots, or webpki's where the system has none.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use log::{debug, warn};
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};

/// Responses larger than this are not an intensity document.
const MAX_BODY: usize = 1 << 20;

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

/// An error with its causes, which hyper keeps out of its own message ("client error
/// (Connect)": connection refused, DNS, certificate...).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
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
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Unreachable {
                    url: shown.clone(),
                    detail: chain(&e),
                })?;
            let status = resp.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: shown.clone(),
                    status,
                    hint: status_hint(status),
                });
            }
            let body = Limited::new(resp.into_body(), MAX_BODY).collect().await;
            body.map(|b| b.to_bytes()).map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge { url: shown.clone() }
                } else {
                    FetchError::Unreachable {
                        url: shown.clone(),
                        detail: chain(&*e),
                    }
                }
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Timeout {
                    url: shown.clone(),
                    timeout,
                })
            })
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

/// The system's CA certificates; webpki's bundled roots where there are none (a distroless
/// image without ca-certificates).
fn roots(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        debug!("loading the system's CA certificates: {e}");
    }
    let (added, _) = store.add_parsable_certificates(native.certs);
    if added == 0 {
        warn!(
            "no CA certificates found on this system (SSL_CERT_FILE, /etc/ssl/certs): \
             --carbon.intensity-url uses the Mozilla roots built into wattlet"
        );
        store.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    }
    store.add_parsable_certificates(extra.iter().cloned());
    store
}
