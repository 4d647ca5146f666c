//! The intensity sources against a real local HTTP(S) server speaking Electricity Maps' shape,
//! real files, and the order in which sources take over from each other.
//!
//! testdata/ holds a test CA and a server certificate for 127.0.0.1 and localhost (P-256,
//! valid until 2126), made with openssl: `req -x509` for the CA (CA:TRUE, keyCertSign), then
//! a CSR signed by it with serverAuth and the SAN. The CA's key was not kept.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::get,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use super::{
    CarbonArgs, Intensity, SourceKind, Zone,
    api::{self, ApiConfig},
    file::tests::{put, temp_dir},
    http::HttpClient,
    intensity::{CarbonError, Tuning, check_with},
    table,
};

const EXAMPLE: &str = r#"{"zone":"DE","carbonIntensity":302,"datetime":"2026-11-22T14:00:00.000Z",
    "updatedAt":"2026-11-22T13:47:06.283Z","emissionFactorType":"lifecycle","isEstimated":true,
    "estimationMethod":"TIME_SLICER_AVERAGE"}"#;

#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    body: String,
    delay: Duration,
}

/// What the server answers now, and the `auth-token` of every request it got.
#[derive(Clone)]
struct Server {
    answer: Arc<Mutex<Answer>>,
    tokens: Arc<Mutex<Vec<Option<String>>>>,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn new() -> Self {
        Self {
            answer: Arc::new(Mutex::new(Answer {
                status: 200,
                body: EXAMPLE.into(),
                delay: Duration::ZERO,
            })),
            tokens: Arc::default(),
            hits: Arc::default(),
        }
    }

    fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = Answer {
            status,
            body: body.into(),
            delay: Duration::ZERO,
        };
    }

    fn slow(&self, delay: Duration) {
        self.answer.lock().unwrap().delay = delay;
    }

    fn app(&self) -> Router {
        Router::new()
            .route("/v3/carbon-intensity/latest", get(latest))
            .with_state(self.clone())
    }

    async fn http(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self.app();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    async fn https(&self) -> SocketAddr {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server_tls())),
        };
        let app = self.app();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
}

async fn latest(State(s): State<Server>, headers: HeaderMap) -> (StatusCode, String) {
    s.hits.fetch_add(1, Ordering::Relaxed);
    let token = headers
        .get("auth-token")
        .map(|v| v.to_str().unwrap().to_owned());
    s.tokens.lock().unwrap().push(token);
    let a = s.answer.lock().unwrap().clone();
    tokio::time::sleep(a.delay).await;
    (StatusCode::from_u16(a.status).unwrap(), a.body)
}

fn server_tls() -> rustls::ServerConfig {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(include_bytes!("testdata/server.pem"))
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("testdata/server.key")).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}

fn test_ca() -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(include_bytes!("testdata/ca.pem"))
        .collect::<Result<_, _>>()
        .unwrap()
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that does not trust us fails the handshake: wait for the next one.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn url(scheme: &str, addr: SocketAddr) -> http::Uri {
    format!("{scheme}://{addr}/v3/carbon-intensity/latest?zone=DE")
        .parse()
        .unwrap()
}

fn cfg(url: http::Uri) -> ApiConfig {
    ApiConfig {
        url,
        token_file: None,
        refresh: Duration::from_millis(50),
        max_age: Duration::from_secs(2),
        timeout: Duration::from_millis(500),
        retry_min: Duration::from_millis(20),
    }
}

/// Waits (up to 20 s, for a loaded machine) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn every_kind_of_answer() {
    let server = Server::new();
    let addr = server.http().await;
    let client = HttpClient::new(&[]).unwrap();
    let c = cfg(url("http", addr));

    let p = api::fetch(&c, &client).await.unwrap();
    assert_eq!(p.grams_per_kwh, 302.0);
    assert_eq!(p.zone.as_deref(), Some("DE"));
    assert_eq!(p.is_estimated, Some(true));
    assert_eq!(p.datetime.as_deref(), Some("2026-11-22T14:00:00.000Z"));

    server.answer(200, "412.5");
    assert_eq!(api::fetch(&c, &client).await.unwrap().grams_per_kwh, 412.5);

    for (status, body, reason) in [
        (200, "<html>gateway</html>", "not_json"),
        (500, r#"{"error":"internal"}"#, "http_status"),
        (401, r#"{"error":"unauthorized"}"#, "http_status"),
        (
            200,
            r#"{"zone":"DE","datetime":"2026-11-22T14:00:00Z"}"#,
            "missing_field",
        ),
        (
            200,
            r#"{"zone":"DE","carbonIntensity":null}"#,
            "missing_field",
        ),
        (200, r#"{"zone":"DE","carbonIntensity":-12}"#, "negative"),
        (200, r#"{"zone":"DE","carbonIntensity":"NaN"}"#, "nan"),
        (200, "NaN", "nan"),
        (200, r#"{"zone":"DE","carbonIntensity":2500}"#, "too_high"),
    ] {
        server.answer(status, body);
        let e = api::fetch(&c, &client).await.unwrap_err();
        assert_eq!(e.reason(), reason, "{status} {body}: {e}");
    }

    server.answer(200, EXAMPLE);
    server.slow(Duration::from_secs(3));
    let started = Instant::now();
    let e = api::fetch(&c, &client).await.unwrap_err();
    assert_eq!(e.reason(), "timeout", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout held"
    );

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let e = api::fetch(&cfg(url("http", dead)), &client)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "unreachable", "{e}");
    assert!(e.to_string().contains(&dead.to_string()), "{e}");
    assert!(
        !e.to_string().contains("zone=DE"),
        "the query stays out of logs: {e}"
    );
}

#[tokio::test]
async fn the_token_comes_from_the_file_and_can_rotate() {
    let server = Server::new();
    let addr = server.http().await;
    let client = HttpClient::new(&[]).unwrap();
    let dir = temp_dir("token-rotate");
    let token = dir.join("token");
    let mut c = cfg(url("http", addr));

    api::fetch(&c, &client).await.unwrap();
    c.token_file = Some(token.clone());
    std::fs::write(&token, "first-token\n").unwrap();
    api::fetch(&c, &client).await.unwrap();
    std::fs::write(&token, "second-token").unwrap();
    api::fetch(&c, &client).await.unwrap();
    std::fs::remove_file(&token).unwrap();
    let e = api::fetch(&c, &client).await.unwrap_err();
    assert_eq!(e.reason(), "token_file");

    let seen = server.tokens.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            None,
            Some("first-token".to_owned()),
            Some("second-token".to_owned())
        ],
        "no request without its token"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn https_with_a_trusted_ca_and_only_then() {
    let server = Server::new();
    let addr = server.https().await;
    let c = cfg(url("https", addr));

    let trusting = HttpClient::new(&test_ca()).unwrap();
    assert_eq!(
        api::fetch(&c, &trusting).await.unwrap().grams_per_kwh,
        302.0
    );

    // The system's roots (or webpki's) do not know the test CA: the handshake fails.
    let system = HttpClient::new(&[]).unwrap();
    let e = api::fetch(&c, &system).await.unwrap_err();
    assert_eq!(e.reason(), "unreachable", "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

fn args_with_api(url: http::Uri) -> CarbonArgs {
    CarbonArgs {
        intensity_url: Some(url),
        refresh: Duration::from_millis(50),
        max_age: Duration::from_secs(2),
        ..CarbonArgs::default()
    }
}

fn tuning() -> Tuning {
    Tuning {
        timeout: Some(Duration::from_millis(500)),
        retry_min: Some(Duration::from_millis(20)),
        extra_roots: test_ca(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keeps_its_last_good_value_for_max_age_then_fails_over_and_recovers() {
    let server = Server::new();
    let addr = server.https().await;
    let args = CarbonArgs {
        intensity: Some(100.0),
        ..args_with_api(url("https", addr))
    };
    let intensity = Intensity::start_tuned(&args, &tuning()).unwrap();

    eventually("the first poll", || {
        intensity.current(Instant::now()).source == SourceKind::Api
    })
    .await;
    let r = intensity.current(Instant::now());
    assert_eq!((r.grams_per_kwh, r.zone_label()), (302.0, "DE"));
    assert_eq!(r.is_estimated, Some(true));

    // The API breaks: its last good value stays in force, and every failure is counted.
    server.answer(500, "upstream down");
    let hits = server.hits.load(Ordering::Relaxed);
    eventually("failed polls", || {
        let failed = intensity
            .errors()
            .iter()
            .any(|e| e.source == SourceKind::Api && e.reason == "http_status" && e.count >= 2);
        failed && server.hits.load(Ordering::Relaxed) >= hits + 2
    })
    .await;
    let r = intensity.current(Instant::now());
    assert_eq!((r.source, r.grams_per_kwh), (SourceKind::Api, 302.0));
    let fetched = r.fetched_at;
    // Past max-age after the last good fetch, the next source (static) takes over...
    let later = intensity.current(fetched + args.max_age + Duration::from_millis(1));
    assert_eq!(
        (later.source, later.grams_per_kwh),
        (SourceKind::Static, 100.0)
    );
    // ...as it does in real time.
    eventually("failover to static", || {
        intensity.current(Instant::now()).source == SourceKind::Static
    })
    .await;

    // The API comes back: it is preferred again at once.
    server.answer(200, r#"{"zone":"DE","carbonIntensity":250}"#);
    eventually("recovery", || {
        let r = intensity.current(Instant::now());
        r.source == SourceKind::Api && r.grams_per_kwh == 250.0
    })
    .await;

    // Dropping the handle stops the poller.
    drop(intensity);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = server.hits.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.hits.load(Ordering::Relaxed), after, "still polling");
}

#[test]
fn the_handle_can_be_shared_with_the_measuring_thread() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Intensity>();
    shareable::<CarbonArgs>();
}

#[test]
fn the_poller_needs_the_agents_runtime() {
    let args = args_with_api("http://127.0.0.1:9/".parse().unwrap());
    assert!(matches!(
        Intensity::start(&args),
        Err(CarbonError::NoRuntime)
    ));
    // Without the API, no runtime is needed.
    assert!(Intensity::start(&CarbonArgs::default()).is_ok());
}

#[test]
fn sources_take_over_in_order() {
    let dir = temp_dir("order");
    let path = dir.join("intensity.json");
    put(&path, r#"{"zone":"FR","carbonIntensity":44}"#);
    let args = CarbonArgs {
        intensity_file: Some(path.clone()),
        intensity: Some(100.0),
        zone: Some(Zone(table::lookup(Some("eu-west-3")).unwrap())),
        max_age: Duration::from_secs(60),
        ..CarbonArgs::default()
    };
    let i = Intensity::start(&args).unwrap();
    let t0 = Instant::now();
    let r = i.current(t0);
    assert_eq!(
        (r.source, r.grams_per_kwh, r.zone_label()),
        (SourceKind::File, 44.0, "FR")
    );

    // The file goes bad: its last good value holds for max-age, then static takes over.
    put(&path, "garbage");
    assert_eq!(i.current(t0).source, SourceKind::File);
    let r = i.current(t0 + Duration::from_secs(61));
    assert_eq!((r.source, r.grams_per_kwh), (SourceKind::Static, 100.0));
    assert_eq!(r.zone_label(), "eu-west-3", "the zone the operator named");
    assert_eq!(i.errors().len(), 1);

    // Without a fixed value, the table; --carbon.zone wins over the node's region.
    let table_only = CarbonArgs {
        intensity_file: None,
        intensity: None,
        ..args.clone()
    };
    let i = Intensity::start(&table_only).unwrap();
    assert!(i.set_region(Some("us-east-1")));
    let r = i.current(t0);
    assert_eq!(
        (r.source, r.grams_per_kwh, r.zone_label()),
        (SourceKind::Table, 51.1, "eu-west-3")
    );

    // No zone: the node's region, if the table knows it; else the world average.
    let i = Intensity::start(&CarbonArgs::default()).unwrap();
    assert_eq!(i.current(t0).source, SourceKind::Default);
    assert!(i.set_region(Some("europe-west4")));
    let r = i.current(t0);
    assert_eq!((r.source, r.grams_per_kwh), (SourceKind::Table, 194.35));
    assert!(!i.set_region(Some("moon-base-1")));
    let r = i.current(t0);
    assert_eq!(
        (r.source, r.grams_per_kwh),
        (SourceKind::Default, table::WORLD_AVERAGE)
    );
    assert_eq!(r.zone_label(), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_says_what_is_used_and_how_to_do_better() {
    let c = super::check(&CarbonArgs::default());
    assert!(!c.ok);
    assert_eq!(c.reading.source, SourceKind::Default);
    assert!(
        c.detail.contains("world average 473.05 g/kWh"),
        "{}",
        c.detail
    );
    assert!(c.detail.contains("--carbon.zone"), "{}", c.detail);
    assert!(c.detail.contains("PUE 1"), "{}", c.detail);

    let zoned = CarbonArgs {
        zone: Some(Zone(table::lookup(Some("DE")).unwrap())),
        pue: 1.2,
        embodied_kg: Some(1000.0),
        ..CarbonArgs::default()
    };
    let c = super::check(&zoned);
    assert!(c.ok, "{}", c.detail);
    assert!(
        c.detail.starts_with("table: 344.14 g/kWh for DE (Ember"),
        "{}",
        c.detail
    );
    assert!(
        c.detail.contains("embodied 1000 kgCO2e over 1460 days"),
        "{}",
        c.detail
    );

    // An API that does not answer: the table is used, and check says why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let c = super::check(&CarbonArgs {
        intensity_url: Some(url("http", dead)),
        ..zoned
    });
    assert!(!c.ok);
    assert_eq!(c.reading.source, SourceKind::Table);
    assert!(
        c.detail
            .contains("--carbon.intensity-url failed: cannot reach"),
        "{}",
        c.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probes_the_api_once() {
    let server = Server::new();
    let addr = server.https().await;
    let args = args_with_api(url("https", addr));
    let i = tokio::task::spawn_blocking(move || Intensity::probe_tuned(&args, &tuning()))
        .await
        .unwrap();
    let c = check_with(&i, &CarbonArgs::default());
    assert!(c.ok, "{}", c.detail);
    assert!(
        c.detail.starts_with(&format!(
            "api: 302 g/kWh for DE (estimated) from https://{addr}/v3/carbon-intensity/latest?…"
        )),
        "{}",
        c.detail
    );
    assert_eq!(
        server.hits.load(Ordering::Relaxed),
        1,
        "one poll, no poller"
    );
}
