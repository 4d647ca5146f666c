//! A test PKI made at test time with rcgen: a CA, a server certificate for localhost and
//! 127.0.0.1, client certificates; written as PEM files into a temporary directory. And a small
//! blocking HTTPS client (rustls) to talk to the agent with them.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

/// A certificate authority whose files live in `dir` (removed on drop).
pub struct TestCa {
    pub dir: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// PEM files of an issued certificate and its key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA, its certificate written to `<dir>/ca.crt`.
    pub fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("wattlet-pki-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        fs::write(dir.join("ca.crt"), cert.pem())?;
        Ok(Self { dir, cert, key })
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A server certificate for localhost and 127.0.0.1, as `<name>.crt` and `<name>.key`.
    pub fn server(&self, name: &str) -> Result<Issued> {
        self.issue(name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate, as `<name>.crt` and `<name>.key`.
    pub fn client(&self, name: &str) -> Result<Issued> {
        self.issue(name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let issued = Issued {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        fs::write(&issued.cert, cert.pem())?;
        fs::write(&issued.key, key.serialize_pem())?;
        Ok(issued)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A bcrypt hash of `password` at cost 4 (fast; the cost does not matter to the tests).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt hashes any password")
}

/// A blocking HTTPS client trusting one CA, with an optional client certificate.
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    pub fn new(ca_file: &Path, identity: Option<&Issued>) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file)? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match identity {
            Some(id) => builder.with_client_auth_cert(
                CertificateDer::pem_file_iter(&id.cert)?.collect::<Result<_, _>>()?,
                PrivateKeyDer::from_pem_file(&id.key)?,
            )?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// GET `path` over HTTPS with optional basic auth: (status, body).
    pub fn get(&self, addr: &str, path: &str, auth: Option<(&str, &str)>) -> Result<(u16, String)> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn = rustls::ClientConnection::new(
            self.config.clone(),
            ServerName::try_from("localhost")?.to_owned(),
        )?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let auth = auth.map(basic_auth_header).unwrap_or_default();
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // Some servers close without close_notify; what was read is the response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(e).context("reading the HTTPS response"),
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let Some(status) = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()) else {
            bail!("no HTTP status in {head:?}");
        };
        Ok((status, body.to_owned()))
    }
}

/// `Authorization: Basic …` header line for `user:password`.
pub fn basic_auth_header((user, password): (&str, &str)) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}
