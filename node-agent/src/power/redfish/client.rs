//! The HTTPS client of the BMC: hyper with rustls and ring (the stack kube already builds),
//! basic authentication, the BMC's own CA or the system's, or no check at all when asked.

use std::{sync::Arc, time::Duration};

use http::{HeaderValue, Request, header};
use http_body_util::Empty;
use hyper_util::{client::legacy::Client as Hyper, rt::TokioExecutor};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use serde_json::Value;

use crate::http_client::{self, Failure, Https};

use super::{
    RedfishError, RedfishOptions,
    error::status_hint,
    options::{CaFile, RedfishUrl},
};

/// How the BMC's certificate is checked.
#[derive(Clone, Debug)]
pub(crate) enum Trust {
    /// The system's CAs (webpki's roots where the system has none).
    System,
    /// Only these CAs.
    Ca(CaFile),
    /// Not at all (`--power.redfish.insecure`).
    Anything,
}

#[derive(Clone, Debug)]
pub(crate) struct Client {
    http: Https,
    url: RedfishUrl,
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl Client {
    pub(crate) fn new(opts: &RedfishOptions, url: &RedfishUrl) -> Result<Self, RedfishError> {
        let trust = match (&opts.ca, opts.insecure) {
            (_, true) => Trust::Anything,
            (Some(ca), false) => Trust::Ca(ca.clone()),
            (None, false) => Trust::System,
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls(&trust)?)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            http: Hyper::builder(TokioExecutor::new()).build(https),
            url: url.clone(),
            auth: opts.credentials.as_ref().map(|c| c.header()),
            timeout: opts.timeout,
        })
    }

    pub(crate) fn root(&self) -> &str {
        &self.url.root
    }

    /// GETs a resource of the service by its path (an `@odata.id`), the whole exchange within
    /// the timeout. Only paths on the configured service are followed.
    pub(crate) async fn get(&self, path: &str) -> Result<Value, RedfishError> {
        let url = self.url.at(path);
        if !path.starts_with('/') {
            return Err(RedfishError::Shape {
                url,
                what: "a link that is not a path on this service".into(),
            });
        }
        let mut req = Request::get(&url)
            .header(header::ACCEPT, "application/json")
            .header("OData-Version", "4.0")
            .header(
                header::USER_AGENT,
                concat!("wattlet/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &self.auth {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let req = req.body(Empty::new()).map_err(|e| RedfishError::Shape {
            url: url.clone(),
            what: format!("not a valid request: {e}"),
        })?;
        let body = (http_client::exchange(&self.http, req, self.timeout).await)
            .map_err(|f| self.failed(f, &url))?;
        serde_json::from_slice(&body).map_err(|e| RedfishError::NotJson {
            url,
            detail: e.to_string(),
        })
    }

    /// The exchange's failure, for `url`.
    fn failed(&self, f: Failure, url: &str) -> RedfishError {
        let url = url.to_owned();
        match f {
            Failure::Unreachable(detail) => RedfishError::Unreachable { url, detail },
            Failure::Status(status) => RedfishError::Status {
                url,
                status,
                hint: status_hint(status),
            },
            Failure::TooLarge => RedfishError::TooLarge { url },
            Failure::Timeout => RedfishError::Timeout {
                url,
                timeout: self.timeout,
            },
        }
    }
}

fn tls(trust: &Trust) -> Result<ClientConfig, RedfishError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
        Trust::Ca(ca) => {
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(ca.certs.iter().cloned());
            builder.with_root_certificates(store)
        }
        Trust::System => {
            builder.with_root_certificates(http_client::system_roots("--power.redfish.url"))
        }
    };
    Ok(config.with_no_client_auth())
}

/// `--power.redfish.insecure`: any certificate is accepted; the handshake's signatures are
/// still checked, so the session is at least with the holder of that certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
