//! The web configuration file (`--web.config.file`), in the format Prometheus exporters share
//! (exporter-toolkit's `docs/web-configuration.md`): `tls_server_config`, `http_server_config`,
//! `basic_auth_users`, `rate_limit`. Every key is checked when read; an unknown key, or a known
//! one Wattlet cannot honour, is an error naming the key.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

/// A web configuration file that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("web config {}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, an unknown key or a value of the wrong type (serde_yaml names the key and the
    /// line).
    #[error("web config {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("web config {}: {key}: {why}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        why: String,
    },
}

/// A checked web configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebConfig {
    /// Serve HTTPS with these settings; plain HTTP when absent.
    pub tls: Option<TlsSettings>,
    /// User name → bcrypt hash; no authentication when empty.
    pub users: BTreeMap<String, String>,
    /// Added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub rate_limit: Option<RateLimit>,
}

/// Where a PEM document comes from: a file (re-read when it changes) or the config itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites by rustls name, in preference order; every suite when empty. TLS 1.3
    /// suites are always on (Go's crypto/tls, which the format follows, does the same).
    pub cipher_suites: Vec<&'static str>,
    pub prefer_server_cipher_suites: bool,
    /// Key-exchange groups by rustls name, in preference order; the provider's when empty.
    pub curves: Vec<&'static str>,
}

/// exporter-toolkit's `client_auth_type` values (Go's `tls.ClientAuthType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    /// Ask for a certificate; accept any, or none.
    RequestClientCert,
    /// Require a certificate; accept any.
    RequireAnyClientCert,
    /// Ask for a certificate; verify it against the client CA if one is sent.
    VerifyClientCertIfGiven,
    /// Require a certificate signed by the client CA (the only setting that authenticates).
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: [(&'static str, ClientAuth); 6] = [
        ("NoClientCert", Self::NoClientCert),
        ("RequestClientCert", Self::RequestClientCert),
        ("RequireAnyClientCert", Self::RequireAnyClientCert),
        // exporter-toolkit keeps this older name working.
        ("RequireClientCert", Self::RequireAnyClientCert),
        ("VerifyClientCertIfGiven", Self::VerifyClientCertIfGiven),
        (
            "RequireAndVerifyClientCert",
            Self::RequireAndVerifyClientCert,
        ),
    ];

    /// Whether a client certificate is checked against the client CA.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// A token bucket over every request: `burst` at once, then one per `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub interval: Duration,
    pub burst: u32,
}

/// Go's TLS 1.2 suite names that rustls (ring) implements, with rustls's names.
const TLS12_SUITES: [(&str, &str); 8] = [
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// Go's TLS 1.3 suite names: accepted and, as in Go, without effect.
const TLS13_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Suites Go offers that rustls does not implement (CBC modes, RSA key exchange).
const UNSUPPORTED_SUITES: [&str; 10] = [
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// Go's curve names → rustls (ring) key-exchange groups.
const CURVES: [(&str, &str); 3] = [
    ("X25519", "X25519"),
    ("CurveP256", "secp256r1"),
    ("CurveP384", "secp384r1"),
];

/// The headers exporter-toolkit lets a file set, and the values it accepts (any when empty).
/// Kept as the toolkit keeps it, so that one file means the same to every exporter.
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; Wattlet serves HTTP/1.1 only.
    #[allow(dead_code, reason = "read so that the key is known, not used")]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    interval: Option<String>,
    burst: Option<u32>,
}

/// A problem with one key, before the file's path is attached.
struct KeyError {
    key: String,
    why: String,
}

fn bad(key: impl Into<String>, why: impl Into<String>) -> KeyError {
    KeyError {
        key: key.into(),
        why: why.into(),
    }
}

impl WebConfig {
    /// Reads and checks the file; relative file names in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_text(&text, path)
    }

    /// Checks the text of the file at `path` (named in errors; relative file names in it are
    /// relative to its directory). Pure: the web_config fuzz target feeds it any text.
    pub fn from_text(text: &str, path: &Path) -> Result<Self, WebConfigError> {
        Self::parse(text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| e.at(path.to_owned()))
    }

    fn parse(text: &str, dir: &Path) -> Result<Self, ParseError> {
        // An empty file (or only comments) is a valid, empty configuration.
        let raw: Option<RawFile> =
            serde_yaml::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        let raw = raw.unwrap_or_default();
        let tls = match raw.tls_server_config {
            Some(t) if tls_enabled(&t) => Some(tls_settings(t, dir)?),
            Some(t) => {
                reject_tls_without_cert(&t)?;
                None
            }
            None => None,
        };
        Ok(Self {
            tls,
            users: users(raw.basic_auth_users.unwrap_or_default())?,
            headers: headers(
                raw.http_server_config
                    .and_then(|h| h.headers)
                    .unwrap_or_default(),
            )?,
            rate_limit: raw.rate_limit.map(rate_limit).transpose()?,
        })
    }
}

enum ParseError {
    Syntax(String),
    Key(KeyError),
}

impl From<KeyError> for ParseError {
    fn from(e: KeyError) -> Self {
        Self::Key(e)
    }
}

impl ParseError {
    fn at(self, path: PathBuf) -> WebConfigError {
        match self {
            Self::Syntax(message) => WebConfigError::Syntax { path, message },
            Self::Key(KeyError { key, why }) => WebConfigError::Invalid { path, key, why },
        }
    }
}

/// As exporter-toolkit decides it: TLS is on when any certificate, key or client setting is.
fn tls_enabled(t: &RawTls) -> bool {
    t.cert.is_some()
        || t.cert_file.is_some()
        || t.key.is_some()
        || t.key_file.is_some()
        || t.client_ca.is_some()
        || t.client_ca_file.is_some()
        || t.client_auth_type.is_some()
}

/// Versions, suites and curves without a certificate would silently serve plain HTTP.
fn reject_tls_without_cert(t: &RawTls) -> Result<(), KeyError> {
    let set = [
        ("min_version", t.min_version.is_some()),
        ("max_version", t.max_version.is_some()),
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ];
    match set.iter().find(|(_, on)| *on) {
        Some((key, _)) => Err(bad(
            format!("tls_server_config.{key}"),
            "set, but no cert_file/key_file: TLS would be off; add the certificate and key",
        )),
        None => Ok(()),
    }
}

fn tls_settings(t: RawTls, dir: &Path) -> Result<TlsSettings, KeyError> {
    let cert = pem_source("cert", t.cert, t.cert_file, dir)?
        .ok_or_else(|| bad("tls_server_config", "missing one of cert or cert_file"))?;
    let key = pem_source("key", t.key, t.key_file, dir)?
        .ok_or_else(|| bad("tls_server_config", "missing one of key or key_file"))?;
    let client_ca = pem_source("client_ca", t.client_ca, t.client_ca_file, dir)?;
    let client_auth = client_auth(t.client_auth_type.as_deref())?;
    check_client_ca(client_auth, client_ca.is_some())?;
    if t.client_allowed_sans.is_some() {
        return Err(bad(
            "tls_server_config.client_allowed_sans",
            "not supported by Wattlet: give the scrapers certificates from a dedicated client \
             CA and use client_auth_type: RequireAndVerifyClientCert",
        ));
    }
    let min_version = version("min_version", t.min_version.as_deref(), TlsVersion::Tls12)?;
    let max_version = version("max_version", t.max_version.as_deref(), TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err(bad(
            "tls_server_config.min_version",
            "is above max_version: no TLS version would be left",
        ));
    }
    let cipher_suites = cipher_suites(t.cipher_suites.unwrap_or_default(), min_version)?;
    Ok(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        curves: curves(t.curve_preferences.unwrap_or_default())?,
    })
}

/// `<name>` (inline PEM) or `<name>_file` (a path, relative to the config's directory).
fn pem_source(
    name: &str,
    inline: Option<String>,
    file: Option<String>,
    dir: &Path,
) -> Result<Option<Pem>, KeyError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(bad(
            format!("tls_server_config.{name}"),
            format!("{name} and {name}_file are both set: keep one"),
        )),
        (Some(pem), None) if pem.trim().is_empty() => Err(bad(
            format!("tls_server_config.{name}"),
            "is empty".to_owned(),
        )),
        (Some(pem), None) => Ok(Some(Pem::Inline(pem))),
        (None, Some(f)) if f.trim().is_empty() => Err(bad(
            format!("tls_server_config.{name}_file"),
            "is empty".to_owned(),
        )),
        (None, Some(f)) => Ok(Some(Pem::File(dir.join(f)))),
        (None, None) => Ok(None),
    }
}

fn client_auth(value: Option<&str>) -> Result<ClientAuth, KeyError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(ClientAuth::NoClientCert);
    };
    ClientAuth::NAMES
        .iter()
        .find(|(n, _)| *n == value)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            let names: Vec<&str> = ClientAuth::NAMES.iter().map(|(n, _)| *n).collect();
            bad(
                "tls_server_config.client_auth_type",
                format!(
                    "unknown value {value:?}; expected one of {}",
                    names.join(", ")
                ),
            )
        })
}

fn check_client_ca(auth: ClientAuth, has_ca: bool) -> Result<(), KeyError> {
    if has_ca && auth == ClientAuth::NoClientCert {
        return Err(bad(
            "tls_server_config.client_ca_file",
            "a client CA is set but client_auth_type is NoClientCert: set client_auth_type: \
             RequireAndVerifyClientCert, or remove the CA",
        ));
    }
    if auth.verifies() && !has_ca {
        return Err(bad(
            "tls_server_config.client_auth_type",
            format!("{auth:?} verifies client certificates: set client_ca_file (or client_ca)"),
        ));
    }
    Ok(())
}

fn version(key: &str, value: Option<&str>, default: TlsVersion) -> Result<TlsVersion, KeyError> {
    match value {
        None | Some("") => Ok(default),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some(v @ ("TLS11" | "TLS10")) => Err(bad(
            format!("tls_server_config.{key}"),
            format!("{v} is not supported (rustls speaks TLS12 and TLS13 only)"),
        )),
        Some(v) => Err(bad(
            format!("tls_server_config.{key}"),
            format!("unknown value {v:?}; expected one of TLS13, TLS12"),
        )),
    }
}

fn cipher_suites(names: Vec<String>, min: TlsVersion) -> Result<Vec<&'static str>, KeyError> {
    let key = "tls_server_config.cipher_suites";
    let mut out = Vec::new();
    for name in &names {
        if let Some((_, rustls)) = TLS12_SUITES.iter().find(|(go, _)| go == name) {
            if !out.contains(rustls) {
                out.push(*rustls);
            }
        } else if UNSUPPORTED_SUITES.contains(&name.as_str()) {
            return Err(bad(
                key,
                format!("{name} is not supported (no CBC or RSA key-exchange suites)"),
            ));
        } else if !TLS13_SUITES.contains(&name.as_str()) {
            let known: Vec<&str> = TLS12_SUITES.iter().map(|(go, _)| *go).collect();
            return Err(bad(
                key,
                format!(
                    "unknown cipher suite {name:?}; expected any of {}",
                    known.join(", ")
                ),
            ));
        }
    }
    if !names.is_empty() && out.is_empty() && min == TlsVersion::Tls12 {
        return Err(bad(
            key,
            "lists no TLS 1.2 suite, so TLS 1.2 could not be negotiated: list one, or set \
             min_version: TLS13",
        ));
    }
    Ok(out)
}

fn curves(names: Vec<String>) -> Result<Vec<&'static str>, KeyError> {
    let mut out = Vec::new();
    for name in &names {
        match CURVES.iter().find(|(go, _)| go == name) {
            Some((_, rustls)) if !out.contains(rustls) => out.push(*rustls),
            Some(_) => {}
            None => {
                let known: Vec<&str> = CURVES.iter().map(|(go, _)| *go).collect();
                return Err(bad(
                    "tls_server_config.curve_preferences",
                    format!(
                        "unknown or unsupported curve {name:?}; expected any of {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn users(users: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, KeyError> {
    for (user, hash) in &users {
        let key = format!("basic_auth_users.{user}");
        if user.is_empty() || user.contains(':') {
            return Err(bad(key, "a user name must be non-empty and without ':'"));
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(bad(
                key,
                "not a bcrypt hash (make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')",
            ));
        }
    }
    Ok(users)
}

fn headers(headers: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, KeyError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let key = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(bad(
                key,
                format!(
                    "this header can not be configured; one of {}",
                    names.join(", ")
                ),
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(bad(
                key,
                format!("invalid value {value:?}; expected one of {allowed:?}"),
            ));
        }
        // As in exporter-toolkit: a blank value leaves the header unset.
        if value.is_empty() {
            continue;
        }
        let value =
            HeaderValue::from_str(&value).map_err(|_| bad(&key, "not a valid header value"))?;
        out.push((HeaderName::from_static(lowercase(canonical)), value));
    }
    Ok(out)
}

/// The allowed header names in the lower case `HeaderName::from_static` requires.
fn lowercase(name: &str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

fn rate_limit(r: RawRateLimit) -> Result<RateLimit, KeyError> {
    let interval = match r.interval.as_deref() {
        None => Duration::ZERO,
        Some(s) => crate::flags::parse_duration(s)
            .map_err(|e| bad("rate_limit.interval", format!("{e:#}")))?,
    };
    let burst = r.burst.unwrap_or(0);
    if !interval.is_zero() && burst == 0 {
        return Err(bad(
            "rate_limit.burst",
            "must be at least 1 when rate_limit.interval is set (an interval of 0 turns the \
             limit off)",
        ));
    }
    Ok(RateLimit { interval, burst })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real bcrypt hash (cost 4: fast) of "secret".
    fn hash() -> String {
        bcrypt::hash("secret", 4).unwrap()
    }

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(text, Path::new("/etc/wattlet")).map_err(|e| e.at("/x.yml".into()))
    }

    /// The error for `text`: its message starts with the path and names `key`, and says `why`.
    fn rejected(text: &str, key: &str, why: &str) {
        let e = parse(text).expect_err(text).to_string();
        assert!(e.starts_with("web config /x.yml: "), "{e}");
        assert!(e.contains(key), "{key:?} not in {e}");
        assert!(e.contains(why), "{why:?} not in {e}");
    }

    #[test]
    fn an_empty_file_is_an_empty_config() {
        for text in ["", "# nothing\n", "{}", "tls_server_config: {}\n"] {
            assert_eq!(parse(text).unwrap(), WebConfig::default(), "{text:?}");
        }
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  \
             client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n  \
             min_version: TLS13\n  max_version: TLS13\n  cipher_suites: \
             [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305, \
             TLS_AES_128_GCM_SHA256]\n  prefer_server_cipher_suites: false\n  \
             curve_preferences: [CurveP256, X25519]\n\
             http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
             X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=31536000\n    \
             X-XSS-Protection: ''\n\
             basic_auth_users:\n  alice: '{hash}'\n\
             rate_limit:\n  interval: 100ms\n  burst: 20\n",
            hash = hash()
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/wattlet/server.crt".into()));
        assert_eq!(tls.key, Pem::File("/abs/server.key".into()));
        assert_eq!(tls.client_ca, Some(Pem::File("/etc/wattlet/ca.crt".into())));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert_eq!(
            tls.cipher_suites,
            [
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        assert!(!tls.prefer_server_cipher_suites);
        assert_eq!(tls.curves, ["secp256r1", "X25519"]);
        let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
        // The blank X-XSS-Protection is left unset.
        assert_eq!(
            names,
            [
                "strict-transport-security",
                "x-content-type-options",
                "x-frame-options"
            ]
        );
        assert!(bcrypt::verify("secret", &c.users["alice"]).unwrap());
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                interval: Duration::from_millis(100),
                burst: 20
            })
        );
    }

    #[test]
    fn defaults_follow_exporter_toolkit() {
        let c = parse("tls_server_config:\n  cert: PEM\n  key: PEM\n").unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, Pem::Inline("PEM".into()));
        assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls13)
        );
        assert!(tls.cipher_suites.is_empty() && tls.curves.is_empty());
        assert!(tls.prefer_server_cipher_suites);
        for (value, auth) in [
            ("RequestClientCert", ClientAuth::RequestClientCert),
            ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
            ("RequireClientCert", ClientAuth::RequireAnyClientCert),
            (
                "VerifyClientCertIfGiven",
                ClientAuth::VerifyClientCertIfGiven,
            ),
        ] {
            let ca = if auth.verifies() {
                "  client_ca_file: ca.pem\n"
            } else {
                ""
            };
            let c = parse(&format!(
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: \
                 {value}\n{ca}"
            ))
            .unwrap();
            assert_eq!(c.tls.unwrap().client_auth, auth, "{value}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        rejected(
            "tls_server_config:\n  cert_fil: a\n",
            "cert_fil",
            "unknown field",
        );
        rejected(
            "tls_config:\n  cert_file: a\n",
            "tls_config",
            "unknown field",
        );
        rejected(
            "http_server_config:\n  header: {}\n",
            "header",
            "unknown field",
        );
        rejected("rate_limit:\n  rate: 5\n", "rate", "unknown field");
        rejected(
            "basic_auth_users: [alice]\n",
            "basic_auth_users",
            "invalid type",
        );
        rejected("tls_server_config: [", "", "line");
    }

    #[test]
    fn every_bad_tls_value_names_its_key() {
        let base = "tls_server_config:\n  cert_file: a\n  key_file: b\n";
        let cases = [
            (
                "  client_auth_type: Foo\n",
                "tls_server_config.client_auth_type",
                "unknown value \"Foo\"; expected one of NoClientCert, RequestClientCert",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "tls_server_config.client_auth_type",
                "set client_ca_file",
            ),
            (
                "  client_ca_file: ca\n",
                "tls_server_config.client_ca_file",
                "NoClientCert",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca\n  \
                 client_allowed_sans: [x]\n",
                "tls_server_config.client_allowed_sans",
                "not supported",
            ),
            (
                "  min_version: TLS11\n",
                "tls_server_config.min_version",
                "not supported",
            ),
            (
                "  max_version: SSL3\n",
                "tls_server_config.max_version",
                "expected one of TLS13, TLS12",
            ),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                "tls_server_config.min_version",
                "above max_version",
            ),
            (
                "  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
                "tls_server_config.cipher_suites",
                "not supported",
            ),
            (
                "  cipher_suites: [TLS_INVENTED]\n",
                "tls_server_config.cipher_suites",
                "unknown cipher suite \"TLS_INVENTED\"",
            ),
            (
                "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "tls_server_config.cipher_suites",
                "no TLS 1.2 suite",
            ),
            (
                "  curve_preferences: [CurveP521]\n",
                "tls_server_config.curve_preferences",
                "CurveP521",
            ),
            ("  cert: PEM\n", "tls_server_config.cert", "both set"),
            (
                "  prefer_server_cipher_suites: maybe\n",
                "prefer_server_cipher_suites",
                "invalid type",
            ),
        ];
        for (extra, key, why) in cases {
            rejected(&format!("{base}{extra}"), key, why);
        }
        rejected(
            "tls_server_config:\n  cert_file: a\n",
            "tls_server_config",
            "missing one of key or key_file",
        );
        rejected(
            "tls_server_config:\n  key_file: b\n",
            "tls_server_config",
            "missing one of cert or cert_file",
        );
        rejected(
            "tls_server_config:\n  cert_file: ''\n  key_file: b\n",
            "tls_server_config.cert_file",
            "is empty",
        );
        rejected(
            "tls_server_config:\n  min_version: TLS13\n",
            "tls_server_config.min_version",
            "no cert_file",
        );
    }

    #[test]
    fn bad_users_headers_and_limits_name_their_key() {
        rejected(
            "basic_auth_users:\n  alice: plaintext\n",
            "basic_auth_users.alice",
            "not a bcrypt hash",
        );
        rejected(
            &format!("basic_auth_users:\n  'a:b': '{}'\n", hash()),
            "basic_auth_users.a:b",
            "without ':'",
        );
        rejected(
            "http_server_config:\n  headers:\n    Server: wattlet\n",
            "http_server_config.headers.Server",
            "can not be configured",
        );
        rejected(
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "http_server_config.headers.X-Frame-Options",
            "expected one of [\"deny\", \"sameorigin\"]",
        );
        rejected(
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
            "X-Content-Type-Options",
            "nosniff",
        );
        rejected(
            "http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\nb\"\n",
            "Content-Security-Policy",
            "not a valid header value",
        );
        rejected(
            "rate_limit:\n  interval: 1s\n",
            "rate_limit.burst",
            "at least 1",
        );
        rejected(
            "rate_limit:\n  interval: soon\n  burst: 1\n",
            "rate_limit.interval",
            "not a duration",
        );
        rejected(
            "rate_limit:\n  burst: -1\n",
            "rate_limit.burst",
            "invalid type",
        );
    }

    /// The example in the README's "Security" section is a valid file.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../../../README.md");
        let section = &readme[readme.find("### The web configuration file").unwrap()..];
        let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let c = parse(example).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert!(bcrypt::verify("change-me", &c.users["prometheus"]).unwrap());
        assert_eq!(c.headers.len(), 2);
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("web config /nonexistent/web.yml: cannot read it: "),
            "{e}"
        );
    }
}
