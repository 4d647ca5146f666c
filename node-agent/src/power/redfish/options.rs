//! The Redfish flags, each value checked when parsed (exit status 2, the flag named): the URL,
//! the credentials file and the CA file are read and checked then.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use base64::Engine as _;
use http::{HeaderValue, Uri};
use rustls::pki_types::{CertificateDer, pem::PemObject as _};

use crate::flags::parse_duration;

#[derive(clap::Args, Clone, Debug)]
pub struct RedfishOptions {
    /// A BMC's Redfish service (https://bmc.example.com, or the service root's URL): the sum of
    /// this node's power supplies' input power becomes the `platform` zone, next to the CPU
    /// source's zones. Read in the background, never in a scrape.
    #[arg(
        id = "redfish_url",
        long = "power.redfish.url",
        value_name = "URL",
        value_parser = RedfishUrl::parse_flag,
        global = true
    )]
    pub url: Option<RedfishUrl>,

    /// A file holding `username:password` on one line, for HTTP basic authentication.
    #[arg(
        id = "redfish_credentials",
        long = "power.redfish.credentials-file",
        value_name = "FILE",
        value_parser = Credentials::parse_flag,
        requires = "redfish_url",
        global = true
    )]
    pub credentials: Option<Credentials>,

    /// PEM certificates to trust for the BMC instead of the system's CAs (a BMC's own CA).
    #[arg(
        id = "redfish_ca",
        long = "power.redfish.ca-file",
        value_name = "FILE",
        value_parser = CaFile::parse_flag,
        requires = "redfish_url",
        conflicts_with = "redfish_insecure",
        global = true
    )]
    pub ca: Option<CaFile>,

    /// Do not check the BMC's certificate (self-signed BMCs). Anyone on the path can then read
    /// the credentials and forge the readings: prefer --power.redfish.ca-file.
    #[arg(
        id = "redfish_insecure",
        long = "power.redfish.insecure",
        requires = "redfish_url",
        global = true
    )]
    pub insecure: bool,

    /// The ComputerSystem that is this node, by its Id, when the BMC describes several and
    /// none has the host's SMBIOS UUID.
    #[arg(
        id = "redfish_system",
        long = "power.redfish.system",
        value_name = "ID",
        requires = "redfish_url",
        global = true
    )]
    pub system: Option<String>,

    /// How often the BMC is read (in the background).
    #[arg(
        id = "redfish_interval",
        long = "power.redfish.interval",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = positive_duration,
        global = true
    )]
    pub interval: Duration,

    /// How long one read of the BMC (all its requests) may take.
    #[arg(
        id = "redfish_timeout",
        long = "power.redfish.timeout",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = positive_duration,
        global = true
    )]
    pub timeout: Duration,

    /// How old the last reading may be before the `platform` zone is stale: no energy is
    /// counted until the BMC answers again. More than --power.redfish.interval; 3 intervals
    /// if not set.
    #[arg(
        id = "redfish_staleness",
        long = "power.redfish.staleness",
        value_name = "DURATION",
        value_parser = positive_duration,
        global = true
    )]
    pub staleness: Option<Duration>,
}

impl RedfishOptions {
    /// The staleness bound in use.
    pub fn staleness(&self) -> Duration {
        self.staleness.unwrap_or(self.interval * 3)
    }

    /// What the value parsers cannot check one flag at a time.
    pub fn check(&self) -> Result<(), String> {
        if self.staleness() <= self.interval {
            return Err(format!(
                "--power.redfish.staleness ({:?}) must be longer than --power.redfish.interval \
                 ({:?}): a BMC answering on time would be stale between its answers",
                self.staleness(),
                self.interval
            ));
        }
        Ok(())
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!("{s:?} must be longer than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The Redfish service: an https URL with the service root's path (`/redfish/v1` if none).
#[derive(Clone, PartialEq, Eq)]
pub struct RedfishUrl {
    /// `https://host[:port]`.
    pub origin: String,
    /// The service root's path, without a trailing slash.
    pub root: String,
}

impl RedfishUrl {
    pub fn parse_flag(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "{s:?}: use https:// (the credentials go with every request)"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{s:?} names no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{s:?}: put the user name and password in --power.redfish.credentials-file, not \
                 in the URL"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{s:?}: a Redfish service root takes no query"));
        }
        let root = match uri.path().trim_end_matches('/') {
            "" => "/redfish/v1".to_owned(),
            p => p.to_owned(),
        };
        Ok(Self {
            origin: format!("https://{authority}"),
            root,
        })
    }

    /// The URL of a path on the service (paths come from the service's own `@odata.id`s).
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

impl fmt::Display for RedfishUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.root)
    }
}

impl fmt::Debug for RedfishUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `username:password` from a file; the password is never printed.
#[derive(Clone)]
pub struct Credentials {
    pub path: PathBuf,
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn parse_flag(path: &str) -> Result<Self, String> {
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let line = lines.next().unwrap_or_default();
        let shape = || format!("{}: expected one line `username:password`", path.display());
        if lines.next().is_some() {
            return Err(shape());
        }
        let (username, password) = line.split_once(':').ok_or_else(shape)?;
        if username.is_empty() {
            return Err(format!("{}: the user name is empty", path.display()));
        }
        Ok(Self {
            path,
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The `Authorization` header of HTTP basic authentication.
    pub fn header(&self) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        let mut v = HeaderValue::from_str(&format!("Basic {token}"))
            .expect("base64 is a valid header value");
        v.set_sensitive(true);
        v
    }

    #[cfg(test)]
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            path: "test".into(),
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (user {}, password hidden)",
            self.path.display(),
            self.username
        )
    }
}

/// CA certificates for the BMC, read from a PEM file.
#[derive(Clone, Debug)]
pub struct CaFile {
    pub path: PathBuf,
    pub certs: Arc<Vec<CertificateDer<'static>>>,
}

impl CaFile {
    pub fn parse_flag(path: &str) -> Result<Self, String> {
        let path = PathBuf::from(path);
        let pem =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ));
        }
        Ok(Self {
            path,
            certs: Arc::new(certs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::fixture::Tree;

    #[test]
    fn urls() {
        let u = RedfishUrl::parse_flag("https://bmc.example:8443").unwrap();
        assert_eq!(
            (u.origin.as_str(), u.root.as_str()),
            ("https://bmc.example:8443", "/redfish/v1")
        );
        assert_eq!(
            u.at("/redfish/v1/Systems"),
            "https://bmc.example:8443/redfish/v1/Systems"
        );
        let u = RedfishUrl::parse_flag("https://10.0.0.9/redfish/v1/").unwrap();
        assert_eq!(u.to_string(), "https://10.0.0.9/redfish/v1");
        for (bad, why) in [
            ("http://bmc", "use https://"),
            ("https://root:calvin@bmc", "credentials-file"),
            ("bmc", "use https://"),
            ("https://bmc/redfish/v1?x=1", "no query"),
        ] {
            let e = RedfishUrl::parse_flag(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_file() {
        let t = Tree::new();
        t.file("creds", "admin:pa:ss word");
        let c = Credentials::parse_flag(t.root().join("creds").to_str().unwrap()).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("admin", "pa:ss word")
        );
        assert_eq!(
            c.header().to_str().unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("admin:pa:ss word")
            )
        );
        assert!(
            !format!("{c:?}").contains("pa:ss"),
            "the password is never printed"
        );
        for (text, why) in [
            ("admin", "expected one line `username:password`"),
            ("a:b\nc:d", "expected one line"),
            (":pw", "the user name is empty"),
        ] {
            t.file("creds", text);
            let e = Credentials::parse_flag(t.root().join("creds").to_str().unwrap()).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn ca_file() {
        let t = Tree::new();
        t.file("ca.pem", "not a certificate");
        let e = CaFile::parse_flag(t.root().join("ca.pem").to_str().unwrap()).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let ca = rcgen::generate_simple_self_signed(vec!["bmc".into()]).unwrap();
        t.file("ca.pem", &ca.cert.pem());
        let f = CaFile::parse_flag(t.root().join("ca.pem").to_str().unwrap()).unwrap();
        assert_eq!(f.certs.len(), 1);
    }
}
