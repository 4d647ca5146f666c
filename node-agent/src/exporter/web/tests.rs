//! The server end to end in-process: a test CA made with rcgen, real TLS handshakes with a
//! rustls client, raw HTTP/1.1 on loopback.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::oneshot,
};
use tokio_rustls::TlsConnector;

use super::*;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "wattlet-web-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `name` by renaming a complete file over it, as a certificate rotation does.
    fn put(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority and what it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A signed certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn issue(&self, cn: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// A server under test, stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(web: Web) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Router::new()
            .route("/", get(|| async { "index\n" }))
            .route("/metrics", get(|| async { "up 1\n" }))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(|| async { "ready\n" }));
        let app = web.guard().wrap(routes);
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(run(listener, app, web, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Stops accepting and waits for the server to return.
    async fn shutdown(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap();
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn web(config: Option<&Path>, health_unauthenticated: bool) -> Web {
    Web::open(config, health_unauthenticated, 64, 8).unwrap()
}

/// A TLS client trusting `ca`, presenting `identity` if given.
fn client(ca: &Ca, identity: Option<&Issued>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![id.der.clone()],
                PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Sends one request, returns (status, full response text).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> (u16, String) {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get_request(path: &str, auth: Option<(&str, &str)>) -> String {
    use base64::Engine as _;
    let auth = auth
        .map(|(u, p)| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            format!("Authorization: Basic {token}\r\n")
        })
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
}

async fn https(
    addr: SocketAddr,
    connector: &TlsConnector,
    request: &str,
) -> std::io::Result<(u16, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Ok(exchange(tls, request).await)
}

async fn plain(addr: SocketAddr, request: &str) -> (u16, String) {
    exchange(TcpStream::connect(addr).await.unwrap(), request).await
}

/// The certificate the server presents in a fresh handshake.
async fn served_certificate(addr: SocketAddr, connector: &TlsConnector) -> CertificateDer<'static> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Files for a TLS server with basic auth (user `prometheus`, password `s3cret`).
fn tls_setup(dir: &TempDir, ca: &Ca, extra: &str) -> PathBuf {
    let server = ca.issue("wattlet", ExtendedKeyUsagePurpose::ServerAuth);
    dir.put("server.crt", &server.cert);
    dir.put("server.key", &server.key);
    dir.put("ca.crt", &ca.pem());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    dir.put(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}\
             basic_auth_users:\n  prometheus: '{hash}'\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        ),
    )
}

#[tokio::test]
async fn tls_with_basic_auth_lets_in_only_the_right_password() {
    let dir = TempDir::new("auth");
    let ca = Ca::new("test CA");
    let config = tls_setup(&dir, &ca, "");
    let server = Server::start(web(Some(&config), false)).await;
    let c = client(&ca, None);

    let (status, text) = https(
        server.addr,
        &c,
        &get_request("/metrics", Some(("prometheus", "s3cret"))),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("up 1\n"), "{text}");
    assert!(
        text.to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{text}"
    );

    for (what, auth) in [
        ("a wrong password", Some(("prometheus", "guess"))),
        ("an unknown user", Some(("root", "s3cret"))),
        ("no password", None),
    ] {
        for path in ["/metrics", "/", "/healthz", "/readyz", "/no-such-page"] {
            let (status, text) = https(server.addr, &c, &get_request(path, auth))
                .await
                .unwrap();
            assert_eq!(status, 401, "{what} on {path}: {text}");
            assert!(
                text.contains("www-authenticate: Basic realm=\"wattlet\""),
                "{what}: {text}"
            );
            // The configured headers are on rejections too.
            assert!(text.contains("x-content-type-options: nosniff"), "{text}");
        }
    }
    // The second right request is served from the cache.
    let started = Instant::now();
    let (status, _) = https(
        server.addr,
        &c,
        &get_request("/", Some(("prometheus", "s3cret"))),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn health_endpoints_are_exempt_only_when_asked() {
    let dir = TempDir::new("health");
    let ca = Ca::new("test CA");
    let config = tls_setup(&dir, &ca, "");
    let server = Server::start(web(Some(&config), true)).await;
    let c = client(&ca, None);
    for path in ["/healthz", "/readyz"] {
        let (status, text) = https(server.addr, &c, &get_request(path, None))
            .await
            .unwrap();
        assert_eq!(status, 200, "{path}: {text}");
    }
    for path in ["/metrics", "/", "/healthz/x", "/readyz/"] {
        let (status, _) = https(server.addr, &c, &get_request(path, None))
            .await
            .unwrap();
        assert_eq!(status, 401, "{path} stays protected");
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_turned_away() {
    let dir = TempDir::new("plain");
    let ca = Ca::new("test CA");
    let config = tls_setup(&dir, &ca, "");
    let server = Server::start(web(Some(&config), false)).await;
    let (status, text) = plain(
        server.addr,
        &get_request("/metrics", Some(("prometheus", "s3cret"))),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("HTTP request to an HTTPS server"), "{text}");
    assert!(!text.contains("up 1"), "{text}");
}

#[tokio::test]
async fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let dir = TempDir::new("mtls");
    let ca = Ca::new("test CA");
    let config = tls_setup(
        &dir,
        &ca,
        "  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
    );
    let server = Server::start(web(Some(&config), false)).await;
    let request = get_request("/metrics", Some(("prometheus", "s3cret")));

    let scraper = ca.issue("prometheus", ExtendedKeyUsagePurpose::ClientAuth);
    let (status, _) = https(server.addr, &client(&ca, Some(&scraper)), &request)
        .await
        .unwrap();
    assert_eq!(status, 200, "with a certificate from the client CA");

    // Without a certificate, or with one from another CA: no HTTP at all.
    let stranger = Ca::new("other CA").issue("mallory", ExtendedKeyUsagePurpose::ClientAuth);
    for (what, connector) in [
        ("no certificate", client(&ca, None)),
        ("another CA's certificate", client(&ca, Some(&stranger))),
    ] {
        let outcome = https(server.addr, &connector, &request).await;
        // TLS 1.3: the client learns of the rejection when it reads.
        assert!(
            outcome.as_ref().is_err() || outcome.as_ref().is_ok_and(|(s, _)| *s == 0),
            "{what}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = TempDir::new("rotate");
    let ca = Ca::new("test CA");
    let config = tls_setup(&dir, &ca, "");
    let server = Server::start(web(Some(&config), false)).await;
    let c = client(&ca, None);
    let before = served_certificate(server.addr, &c).await;

    let renewed = ca.issue("wattlet renewed", ExtendedKeyUsagePurpose::ServerAuth);
    dir.put("server.key", &renewed.key);
    dir.put("server.crt", &renewed.cert);
    let after = served_certificate(server.addr, &c).await;
    assert_ne!(before, after, "a new handshake sees the new certificate");
    assert_eq!(after, renewed.der);

    // A half-done rotation (a key that does not fit) keeps the last good pair in service.
    let next = ca.issue("wattlet next", ExtendedKeyUsagePurpose::ServerAuth);
    dir.put("server.crt", &next.cert);
    assert_eq!(served_certificate(server.addr, &c).await, renewed.der);
    dir.put("server.key", &next.key);
    assert_eq!(served_certificate(server.addr, &c).await, next.der);
    let (status, _) = https(
        server.addr,
        &c,
        &get_request("/", Some(("prometheus", "s3cret"))),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn users_and_headers_are_reloaded_too() {
    let dir = TempDir::new("reload");
    let hash = |p: &str| bcrypt::hash(p, 4).unwrap();
    let config = dir.put(
        "web.yml",
        &format!("basic_auth_users:\n  a: '{}'\n", hash("one")),
    );
    let server = Server::start(web(Some(&config), false)).await;
    assert_eq!(
        plain(server.addr, &get_request("/", Some(("a", "one"))))
            .await
            .0,
        200
    );
    dir.put(
        "web.yml",
        &format!("basic_auth_users:\n  a: '{}'\n", hash("two")),
    );
    assert_eq!(
        plain(server.addr, &get_request("/", Some(("a", "one"))))
            .await
            .0,
        401
    );
    assert_eq!(
        plain(server.addr, &get_request("/", Some(("a", "two"))))
            .await
            .0,
        200
    );
    // Turning TLS on needs a restart: the running configuration stays.
    dir.put(
        "web.yml",
        "tls_server_config:\n  cert_file: x\n  key_file: y\n",
    );
    assert_eq!(
        plain(server.addr, &get_request("/", Some(("a", "two"))))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn only_bodiless_get_and_head_are_served() {
    let server = Server::start(web(None, false)).await;
    let (status, text) = plain(
        server.addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405, "{text}");
    assert!(text.contains("allow: GET, HEAD"), "{text}");
    let (status, _) = plain(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = plain(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
    let (status, text) = plain(
        server.addr,
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Headers over the limit.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES)
    );
    let (status, _) = plain(server.addr, &big).await;
    assert_eq!(status, 431);
}

#[tokio::test]
async fn the_rate_limit_answers_429() {
    let dir = TempDir::new("rate");
    let config = dir.put("web.yml", "rate_limit:\n  interval: 1m\n  burst: 2\n");
    let server = Server::start(web(Some(&config), false)).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(plain(server.addr, &get_request("/metrics", None)).await.0);
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
}

/// A connection from `source` (another loopback address stands for another client).
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let mut w = web(None, false);
    w.timeouts.header_read = Duration::from_millis(500);
    let server = Server::start(w).await;
    let mut slow = connect_from("127.0.0.1", server.addr).await;
    let started = Instant::now();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Meanwhile, a normal scrape.
    let (status, _) = plain(server.addr, &get_request("/metrics", None)).await;
    assert_eq!(status, 200, "a scrape during the slowloris");
    // One header line every 200 ms: never a complete request.
    let cut = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => {} // hyper's 408 on the way out
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never cut off");
    };
    assert!(
        cut >= Duration::from_millis(400),
        "cut after the timeout, not before: {cut:?}"
    );
    println!("slowloris cut off after {cut:?}");
}

#[tokio::test]
async fn one_client_cannot_hold_every_connection() {
    let w = Web::open(None, false, 4, 2).unwrap();
    let server = Server::start(w).await;
    // Client .2 takes its two places and idles; a third connection is closed at once.
    let _a = connect_from("127.0.0.2", server.addr).await;
    let _b = connect_from("127.0.0.2", server.addr).await;
    let mut c = connect_from("127.0.0.2", server.addr).await;
    c.write_all(get_request("/metrics", None).as_bytes())
        .await
        .ok();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("closed, not left waiting");
    assert!(
        n.is_err() || buf.is_empty(),
        "refused: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // Another client is served.
    let scrape = connect_from("127.0.0.3", server.addr).await;
    let (status, _) = exchange(scrape, &get_request("/metrics", None)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn with_every_place_taken_a_scrape_waits_for_one() {
    let mut w = Web::open(None, false, 2, 2).unwrap();
    w.timeouts.header_read = Duration::from_millis(700);
    let server = Server::start(w).await;
    // Two idle connections take both places until the header timeout frees them.
    let _a = connect_from("127.0.0.2", server.addr).await;
    let _b = connect_from("127.0.0.2", server.addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let (status, _) = plain(server.addr, &get_request("/metrics", None)).await;
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    println!("scrape waited {waited:?} for a place");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns_promptly() {
    let server = Server::start(web(None, false)).await;
    let addr = server.addr;
    // An idle keep-alive connection does not hold shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = idle.read(&mut buf).await.unwrap();
    let took = server.shutdown().await;
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_bad_file_names_its_key_at_start() {
    let dir = TempDir::new("bad");
    let config = dir.put(
        "web.yml",
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: Foo\n",
    );
    let e = Web::open(Some(&config), false, 64, 8)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e,
        format!(
            "web config {}: tls_server_config.client_auth_type: unknown value \"Foo\"; expected \
             one of NoClientCert, RequestClientCert, RequireAnyClientCert, RequireClientCert, \
             VerifyClientCertIfGiven, RequireAndVerifyClientCert",
            config.display()
        )
    );
    // A certificate file that is missing, or not a certificate.
    let config = dir.put(
        "web.yml",
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n",
    );
    let e = Web::open(Some(&config), false, 64, 8)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("tls_server_config.cert_file") && e.contains("a.crt: cannot read it"),
        "{e}"
    );
    dir.put("a.crt", "not PEM");
    dir.put("a.key", &KeyPair::generate().unwrap().serialize_pem());
    let e = Web::open(Some(&config), false, 64, 8)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
    let ca = Ca::new("test CA");
    dir.put(
        "a.crt",
        &ca.issue("x", ExtendedKeyUsagePurpose::ServerAuth).cert,
    );
    let e = Web::open(Some(&config), false, 64, 8)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("tls_server_config.key_file") && e.contains("does not fit"),
        "{e}"
    );
}
