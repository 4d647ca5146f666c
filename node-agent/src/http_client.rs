//! What the agent's outbound HTTP(S) clients share (the carbon intensity API, a BMC's Redfish
//! service): hyper with rustls and ring, the stack kube already builds; one GET exchange with a
//! bounded body and time; the system's CA roots; error chains. Each caller names its URL and
//! adds its own hints to a [`Failure`].

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use log::{debug, warn};
use rustls::RootCertStore;

/// Answers larger than this are not a document either client reads.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The client both callers build.
pub(crate) type Https = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why an exchange gave no body.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer: connection, TLS or protocol, with the error's causes.
    Unreachable(String),
    /// An answer that is not 2xx.
    Status(StatusCode),
    /// A body longer than [`MAX_BODY`].
    TooLarge,
    /// No whole answer within the timeout.
    Timeout,
}

/// Sends `req` and returns the body of a 2xx answer; the whole exchange, body included, within
/// `timeout`.
pub(crate) async fn exchange(
    client: &Https,
    req: Request<Empty<Bytes>>,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    let exchange = async {
        let resp = (client.request(req).await).map_err(|e| Failure::Unreachable(chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Failure::Status(status));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY).collect().await;
        body.map(|b| b.to_bytes()).map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Failure::TooLarge
            } else {
                Failure::Unreachable(chain(&*e))
            }
        })
    };
    (tokio::time::timeout(timeout, exchange).await).unwrap_or(Err(Failure::Timeout))
}

/// An error with its causes, which hyper keeps out of its own message ("client error
/// (Connect)": connection refused, certificate...).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The system's CA certificates; webpki's bundled roots where there are none (a distroless
/// image without ca-certificates), with a warning naming `used_by` (the flag that needs them).
pub(crate) fn system_roots(used_by: &str) -> RootCertStore {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        debug!("loading the system's CA certificates: {e}");
    }
    let (added, _) = store.add_parsable_certificates(native.certs);
    if added == 0 {
        warn!(
            "no CA certificates found on this system (SSL_CERT_FILE, /etc/ssl/certs): \
             {used_by} uses the Mozilla roots built into wattlet"
        );
        store.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    }
    store
}
