//! `tls_server_config` → a rustls server configuration (ring provider): the certificate and key,
//! the client-certificate policy, versions, TLS 1.2 suites and key-exchange groups.

use std::{fmt, fs, sync::Arc};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::config::{ClientAuth, Pem, TlsSettings, TlsVersion};

/// A TLS setting that names a file or value rustls cannot use: the key, and why.
#[derive(Debug)]
pub(crate) struct TlsError {
    pub key: &'static str,
    pub why: String,
}

fn bad(key: &'static str, why: impl Into<String>) -> TlsError {
    TlsError {
        key,
        why: why.into(),
    }
}

/// Builds the server configuration, reading the certificate, key and client CA now.
pub(crate) fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider(s));
    let versions = versions(s.min_version, s.max_version);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| bad("tls_server_config.cipher_suites", e.to_string()))?;
    let builder = match client_verifier(s, &provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let chain = certificates(&s.cert, "tls_server_config.cert_file")?;
    let key = private_key(&s.key)?;
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        bad(
            "tls_server_config.key_file",
            format!("{}: does not fit the certificate ({e})", describe(&s.key)),
        )
    })?;
    config.ignore_client_order = s.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// ring's provider, narrowed to the TLS 1.2 suites and the groups the file lists (in its order).
fn provider(s: &TlsSettings) -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    if !s.cipher_suites.is_empty() {
        let all = std::mem::take(&mut p.cipher_suites);
        let tls13 = all
            .iter()
            .filter(|c| c.version() == &rustls::version::TLS13);
        let tls12 = s
            .cipher_suites
            .iter()
            .filter_map(|name| all.iter().find(|c| format!("{:?}", c.suite()) == *name));
        p.cipher_suites = tls13.chain(tls12).copied().collect();
    }
    if !s.curves.is_empty() {
        let all = std::mem::take(&mut p.kx_groups);
        p.kx_groups = s
            .curves
            .iter()
            .filter_map(|name| all.iter().find(|g| format!("{:?}", g.name()) == *name))
            .copied()
            .collect();
    }
    p
}

fn versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static SupportedProtocolVersion> {
    let mut v = Vec::new();
    if min <= TlsVersion::Tls13 && max >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    if min <= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

fn client_verifier(
    s: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    let any = |mandatory| -> Arc<dyn ClientCertVerifier> {
        Arc::new(AnyClientCert {
            mandatory,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    Ok(match s.client_auth {
        ClientAuth::NoClientCert => None,
        ClientAuth::RequestClientCert => Some(any(false)),
        ClientAuth::RequireAnyClientCert => Some(any(true)),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let ca = s.client_ca.as_ref().ok_or_else(|| {
                bad(
                    "tls_server_config.client_ca_file",
                    "missing (checked when parsed)",
                )
            })?;
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "tls_server_config.client_ca_file")? {
                roots.add(cert).map_err(|e| {
                    bad(
                        "tls_server_config.client_ca_file",
                        format!("{}: {e}", describe(ca)),
                    )
                })?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if s.client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(builder.build().map_err(|e| {
                bad(
                    "tls_server_config.client_ca_file",
                    format!("{}: {e}", describe(ca)),
                )
            })?)
        }
    })
}

/// Where a PEM document is, for messages.
fn describe(pem: &Pem) -> String {
    match pem {
        Pem::File(p) => p.display().to_string(),
        Pem::Inline(_) => "(inline PEM)".to_owned(),
    }
}

fn read(pem: &Pem, key: &'static str) -> Result<Vec<u8>, TlsError> {
    match pem {
        Pem::File(path) => {
            fs::read(path).map_err(|e| bad(key, format!("{}: cannot read it: {e}", path.display())))
        }
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
    }
}

fn certificates(pem: &Pem, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(pem, key)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(key, format!("{}: {e}", describe(pem))))?;
    if certs.is_empty() {
        return Err(bad(
            key,
            format!("{}: no PEM certificate in it", describe(pem)),
        ));
    }
    Ok(certs)
}

fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key = "tls_server_config.key_file";
    let bytes = read(pem, key)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        bad(
            key,
            format!("{}: no PEM private key in it ({e})", describe(pem)),
        )
    })
}

/// `RequestClientCert` and `RequireAnyClientCert`: a certificate is asked for, and any is
/// accepted as long as the client proves it holds its key (the signatures are still checked).
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for AnyClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyClientCert")
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
