//! The Redfish source against a real HTTPS server in the test: a service tree in the shape of
//! DMTF's schema and public mockups (public-rackmount1: ServiceRoot → Systems → Links.Chassis →
//! PowerSubsystem/PowerSupplies/{id}/Metrics, and the older Power resource), basic
//! authentication, a test CA made with rcgen at test time, and a BMC that answers, times out,
//! fails, talks nonsense or stops answering.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use super::*;
use crate::{
    power::{PlatformOpened, ReadContext, SourceReading, fixture::Tree},
    sys,
};

const OUR_UUID: &str = "4c4c4544-0037-3610-8048-b3c04f4b3732";
const OTHER_UUID: &str = "92384634-2938-2342-8820-489239905423";

/// How the BMC answers every request.
#[derive(Clone, Debug, PartialEq)]
enum Mode {
    Normal,
    Status(u16),
    Garbage,
    /// Never answers.
    Hang,
}

#[derive(Clone)]
struct Bmc(Arc<Mutex<(BTreeMap<String, Value>, Mode)>>);

impl Bmc {
    fn new(tree: BTreeMap<String, Value>) -> Self {
        Self(Arc::new(Mutex::new((tree, Mode::Normal))))
    }

    fn mode(&self, mode: Mode) {
        self.0.lock().unwrap().1 = mode;
    }

    fn put(&self, path: &str, doc: Value) {
        self.0.lock().unwrap().0.insert(path.into(), doc);
    }

    /// Serves HTTPS on 127.0.0.1 with a certificate from a fresh test CA; returns the address
    /// and the CA.
    fn start(&self) -> (SocketAddr, CaFile) {
        let (server, ca) = certificates();
        let app = Router::new().fallback(answer).with_state(self.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(tcp.local_addr().unwrap()).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
                axum::serve(TlsListener { tcp, acceptor }, app)
                    .await
                    .unwrap();
            });
        });
        (rx.recv().unwrap(), ca)
    }
}

async fn answer(State(bmc): State<Bmc>, headers: HeaderMap, uri: Uri) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:s3cret")
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"BMC\"")],
            "",
        )
            .into_response();
    }
    let (doc, mode) = {
        let state = bmc.0.lock().unwrap();
        let path = uri.path().trim_end_matches('/');
        (state.0.get(path).cloned(), state.1.clone())
    };
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Mode::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Mode::Garbage => (StatusCode::OK, "<html>Service Unavailable</html>").into_response(),
        Mode::Normal => match doc {
            Some(d) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                d.to_string(),
            )
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
    }
}

/// A server configuration with a certificate for 127.0.0.1 signed by a new CA, and the CA.
fn certificates() -> (rustls::ServerConfig, CaFile) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let ca = CaFile {
        path: "test-ca.pem".into(),
        certs: Arc::new(vec![CertificateDer::from(ca_cert.der().to_vec())]),
    };
    (server, ca)
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

fn link(path: &str) -> Value {
    json!({ "@odata.id": path })
}

fn collection(members: &[&str]) -> Value {
    json!({
        "Members@odata.count": members.len(),
        "Members": members.iter().map(|m| link(m)).collect::<Vec<_>>(),
    })
}

/// The service root and the systems, each `(id, UUID, its chassis)`.
fn service(systems: &[(&str, &str, &[&str])]) -> BTreeMap<String, Value> {
    let mut t = BTreeMap::new();
    t.insert(
        "/redfish/v1".into(),
        json!({
            "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "@odata.id": "/redfish/v1",
            "Id": "RootService",
            "RedfishVersion": "1.17.0",
            "Systems": link("/redfish/v1/Systems"),
            "Chassis": link("/redfish/v1/Chassis"),
        }),
    );
    let paths: Vec<String> = systems
        .iter()
        .map(|(id, _, _)| format!("/redfish/v1/Systems/{id}"))
        .collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    t.insert("/redfish/v1/Systems".into(), collection(&refs));
    for ((id, uuid, chassis), path) in systems.iter().zip(&paths) {
        t.insert(
            path.clone(),
            json!({
                "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
                "@odata.id": path,
                "Id": id,
                "UUID": uuid,
                "PowerState": "On",
                "Links": { "Chassis": chassis.iter().map(|c| link(&format!("/redfish/v1/Chassis/{c}"))).collect::<Vec<_>>() },
            }),
        );
    }
    t
}

/// A chassis with a PowerSubsystem and supplies `(id, input W, output W, state)`, each with its
/// PowerSupplyMetrics.
fn with_supplies(
    t: &mut BTreeMap<String, Value>,
    chassis: &str,
    systems: &[&str],
    supplies: &[(&str, f64, f64, &str)],
) {
    let base = format!("/redfish/v1/Chassis/{chassis}");
    t.insert(
        base.clone(),
        json!({
            "@odata.type": "#Chassis.v1_23_0.Chassis",
            "@odata.id": base,
            "Id": chassis,
            "ChassisType": "RackMount",
            "PowerSubsystem": link(&format!("{base}/PowerSubsystem")),
            "Links": { "ComputerSystems": systems.iter().map(|s| link(&format!("/redfish/v1/Systems/{s}"))).collect::<Vec<_>>() },
        }),
    );
    t.insert(
        format!("{base}/PowerSubsystem"),
        json!({
            "@odata.type": "#PowerSubsystem.v1_1_0.PowerSubsystem",
            "Id": "PowerSubsystem",
            "CapacityWatts": 2000,
            "PowerSupplies": link(&format!("{base}/PowerSubsystem/PowerSupplies")),
        }),
    );
    let paths: Vec<String> = supplies
        .iter()
        .map(|(id, ..)| format!("{base}/PowerSubsystem/PowerSupplies/{id}"))
        .collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    t.insert(
        format!("{base}/PowerSubsystem/PowerSupplies"),
        collection(&refs),
    );
    for ((id, input, output, state), path) in supplies.iter().zip(&paths) {
        t.insert(
            path.clone(),
            json!({
                "@odata.type": "#PowerSupply.v1_5_0.PowerSupply",
                "Id": id,
                "Status": { "State": state, "Health": "OK" },
                "PowerCapacityWatts": 1600,
                "Metrics": link(&format!("{path}/Metrics")),
            }),
        );
        if *state != "Absent" {
            t.insert(format!("{path}/Metrics"), metrics(*input, *output));
        }
    }
}

fn metrics(input: f64, output: f64) -> Value {
    json!({
        "@odata.type": "#PowerSupplyMetrics.v1_0_1.PowerSupplyMetrics",
        "Id": "Metrics",
        "InputVoltage": { "Reading": 230.2 },
        "InputCurrentAmps": { "Reading": input / 230.2 },
        "InputPowerWatts": { "Reading": input },
        "OutputPowerWatts": { "Reading": output },
    })
}

/// A chassis with only the older Power resource: PowerControl entries `(system, consumed W)`
/// and supplies that report output power only.
fn with_power(
    t: &mut BTreeMap<String, Value>,
    chassis: &str,
    systems: &[&str],
    control: &[(&str, f64)],
) {
    let base = format!("/redfish/v1/Chassis/{chassis}");
    t.insert(
        base.clone(),
        json!({
            "@odata.type": "#Chassis.v1_14_0.Chassis",
            "Id": chassis,
            "Power": link(&format!("{base}/Power")),
            "Links": { "ComputerSystems": systems.iter().map(|s| link(&format!("/redfish/v1/Systems/{s}"))).collect::<Vec<_>>() },
        }),
    );
    let entries: Vec<Value> = control
        .iter()
        .enumerate()
        .map(|(i, (system, watts))| {
            json!({
                "@odata.id": format!("{base}/Power#/PowerControl/{i}"),
                "MemberId": i.to_string(),
                "Name": format!("System {system} Power"),
                "PowerConsumedWatts": watts,
                "PowerMetrics": { "IntervalInMin": 30, "AverageConsumedWatts": 1 },
                "RelatedItem": [link(&format!("/redfish/v1/Systems/{system}")), link(&base)],
            })
        })
        .collect();
    t.insert(
        format!("{base}/Power"),
        json!({
            "@odata.type": "#Power.v1_7_1.Power",
            "Id": "Power",
            "PowerControl": entries,
            "PowerSupplies": [
                { "MemberId": "0", "Name": "Power Supply Bay", "PowerSupplyType": "AC",
                  "LastPowerOutputWatts": 325, "PowerOutputWatts": 325,
                  "Status": { "State": "Enabled" } }
            ],
        }),
    );
}

fn opts(addr: SocketAddr, ca: &CaFile) -> RedfishOptions {
    RedfishOptions {
        url: Some(RedfishUrl::parse_flag(&format!("https://{addr}")).unwrap()),
        credentials: Some(Credentials::new("admin", "s3cret")),
        ca: Some(ca.clone()),
        insecure: false,
        system: None,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        staleness: Some(Duration::from_secs(30)),
    }
}

/// A sysfs root whose SMBIOS UUID is `uuid`.
fn host(uuid: &str) -> Tree {
    let t = Tree::new();
    t.file("class/dmi/id/product_uuid", uuid);
    t
}

fn read(p: &mut PlatformOpened, at: Duration) -> SourceReading {
    p.source.read(&ReadContext { at, busy: None })
}

fn joules(r: &SourceReading) -> f64 {
    r.zones
        .iter()
        .find(|(z, _)| z == "platform")
        .map(|(_, j)| *j)
        .unwrap()
}

/// Waits (up to 20 s, for a loaded machine) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn several_supplies_input_power_is_summed_never_output() {
    let mut t = service(&[("437XR1138R2", OUR_UUID, &["1U"])]);
    with_supplies(
        &mut t,
        "1U",
        &["437XR1138R2"],
        &[
            ("Bay1", 937.4, 880.0, "Enabled"),
            ("Bay2", 412.6, 390.0, "Enabled"),
            ("Bay3", 0.0, 0.0, "Absent"),
        ],
    );
    let bmc = Bmc::new(t);
    let (addr, ca) = bmc.start();
    let sysfs = host(OUR_UUID);
    let mut p = open(&opts(addr, &ca), sysfs.root(), 1000.0).unwrap();
    assert!(p.answered);
    assert!(
        p.description.ends_with(
            "system 437XR1138R2 (its UUID is the host's SMBIOS UUID), chassis 1U: the input \
             power of 2 power supplies (PowerSubsystem/PowerSupplies, PowerSupplyMetrics \
             InputPowerWatts): 1350.0 W now"
        ),
        "{}",
        p.description
    );
    let t0 = sys::monotonic_now();
    read(&mut p, t0);
    // 1350 W held over 2 s; the supplies' 1270 W of output never counts.
    let r = read(&mut p, t0 + Duration::from_secs(2));
    assert!((joules(&r) - 2700.0).abs() < 1e-6, "{}", joules(&r));
    assert!(r.stale.is_empty() && r.errors.is_empty());
}

#[test]
fn the_older_power_resource_alone() {
    let mut t = service(&[("1", OUR_UUID, &["1U"])]);
    with_power(&mut t, "1U", &["1"], &[("1", 344.0)]);
    let bmc = Bmc::new(t);
    let (addr, ca) = bmc.start();
    let sysfs = host(OUR_UUID);
    let p = open(&opts(addr, &ca), sysfs.root(), 1000.0).unwrap();
    assert!(
        p.description.ends_with(
            "chassis 1U: the system's consumed power (Power, PowerControl[0] \"System 1 Power\" \
             PowerConsumedWatts): 344.0 W now"
        ),
        "{}",
        p.description
    );
    // Supplies that report input power in the older resource are preferred to PowerControl.
    bmc.put(
        "/redfish/v1/Chassis/1U/Power",
        json!({
            "PowerControl": [{ "PowerConsumedWatts": 344, "RelatedItem": [link("/redfish/v1/Systems/1")] }],
            "PowerSupplies": [
                { "Name": "PSU1", "PowerInputWatts": 190.5, "PowerOutputWatts": 170 },
                { "Name": "PSU2", "PowerInputWatts": 180, "PowerOutputWatts": 160 },
            ],
        }),
    );
    let p = open(&opts(addr, &ca), sysfs.root(), 1000.0).unwrap();
    assert!(
        p.description.ends_with(
            "the input power of 2 power supplies (Power, PowerSupplies[].PowerInputWatts): \
             370.5 W now"
        ),
        "{}",
        p.description
    );
}

/// Two nodes in one enclosure: the enclosure's supplies feed both, so neither uses them; each
/// node's figure is its own PowerControl entry. The host's UUID picks ours.
#[test]
fn two_systems_the_uuid_picks_ours_and_shared_supplies_are_not_summed() {
    let mut t = service(&[
        ("NodeA", OTHER_UUID, &["Enclosure"]),
        ("NodeB", OUR_UUID, &["Enclosure"]),
    ]);
    with_supplies(
        &mut t,
        "Enclosure",
        &["NodeA", "NodeB"],
        &[("PSU1", 1500.0, 1400.0, "Enabled")],
    );
    // The enclosure also has the older Power resource with one entry per node.
    let mut older = BTreeMap::new();
    with_power(
        &mut older,
        "Enclosure",
        &["NodeA", "NodeB"],
        &[("NodeA", 610.0), ("NodeB", 420.0)],
    );
    t.get_mut("/redfish/v1/Chassis/Enclosure").unwrap()["Power"] =
        link("/redfish/v1/Chassis/Enclosure/Power");
    t.insert(
        "/redfish/v1/Chassis/Enclosure/Power".into(),
        older["/redfish/v1/Chassis/Enclosure/Power"].clone(),
    );
    let bmc = Bmc::new(t);
    let (addr, ca) = bmc.start();
    let sysfs = host(&OUR_UUID.to_uppercase());
    let p = open(&opts(addr, &ca), sysfs.root(), 1000.0).unwrap();
    assert!(
        p.description
            .contains("system NodeB (its UUID is the host's SMBIOS UUID)")
            && p.description.ends_with(
                "PowerControl[1] \"System NodeB Power\" PowerConsumedWatts): 420.0 W now"
            ),
        "{}",
        p.description
    );
    // --power.redfish.system overrides.
    let o = RedfishOptions {
        system: Some("NodeA".into()),
        ..opts(addr, &ca)
    };
    let p = open(&o, sysfs.root(), 1000.0).unwrap();
    assert!(p.description.ends_with("610.0 W now"), "{}", p.description);
    // A host that is neither: refused, with what the BMC has.
    let stranger = host("11111111-2222-3333-4444-555555555555");
    let e = open(&opts(addr, &ca), stranger.root(), 1000.0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no system on the BMC has this host's SMBIOS UUID")
            && e.contains("NodeA UUID 92384634"),
        "{e}"
    );
}

#[test]
fn wrong_credentials_are_a_clear_error() {
    let mut t = service(&[("1", OUR_UUID, &["1U"])]);
    with_power(&mut t, "1U", &["1"], &[("1", 344.0)]);
    let (addr, ca) = Bmc::new(t).start();
    let sysfs = host(OUR_UUID);
    let o = RedfishOptions {
        credentials: Some(Credentials::new("admin", "wrong")),
        ..opts(addr, &ca)
    };
    let e = open(&o, sysfs.root(), 1000.0).err().unwrap();
    assert!(e.is_auth());
    assert_eq!(
        e.to_string(),
        format!(
            "https://{addr}/redfish/v1 answered HTTP 401 Unauthorized (wrong user name or \
             password: check --power.redfish.credentials-file)"
        )
    );
}

#[test]
fn an_untrusted_certificate_is_refused_unless_insecure() {
    let mut t = service(&[("1", OUR_UUID, &["1U"])]);
    with_power(&mut t, "1U", &["1"], &[("1", 344.0)]);
    let (addr, ca) = Bmc::new(t).start();
    let sysfs = host(OUR_UUID);
    let system_cas = RedfishOptions {
        ca: None,
        ..opts(addr, &ca)
    };
    let p = open(&system_cas, sysfs.root(), 1000.0).unwrap();
    assert!(!p.answered);
    assert!(
        p.description.contains("cannot reach") && p.description.contains("certificate"),
        "{}",
        p.description
    );
    let insecure = RedfishOptions {
        insecure: true,
        ..system_cas
    };
    assert!(open(&insecure, sysfs.root(), 1000.0).unwrap().answered);
}

/// Times out, then 500, then garbage: the zone is stale and the errors say why; once the BMC
/// answers, the zone is read again.
#[test]
fn a_bmc_that_times_out_fails_or_talks_nonsense() {
    let mut t = service(&[("1", OUR_UUID, &["1U"])]);
    with_power(&mut t, "1U", &["1"], &[("1", 300.0)]);
    let bmc = Bmc::new(t);
    let (addr, ca) = bmc.start();
    let sysfs = host(OUR_UUID);
    let o = RedfishOptions {
        timeout: Duration::from_millis(200),
        ..opts(addr, &ca)
    };
    for (mode, why) in [
        (Mode::Hang, "no complete answer from"),
        (
            Mode::Status(500),
            "answered HTTP 500 Internal Server Error (the BMC is busy",
        ),
        (Mode::Garbage, "did not answer JSON"),
    ] {
        bmc.mode(mode.clone());
        let mut p = open(&o, sysfs.root(), 1000.0).unwrap();
        assert!(!p.answered, "{mode:?}");
        assert!(p.description.contains(why), "{mode:?}: {}", p.description);
        let r = read(&mut p, sys::monotonic_now());
        assert_eq!(r.stale, ["platform"], "{mode:?}");
        assert_eq!(joules(&r), 0.0);
        let mut errors = r.errors.len();
        eventually("the failure reported", || {
            errors += read(&mut p, sys::monotonic_now()).errors.len();
            errors > 0
        });
        bmc.mode(Mode::Normal);
        eventually("read again", || {
            read(&mut p, sys::monotonic_now()).stale.is_empty()
        });
    }
}

/// Reads the source now and checks the energy added since the last read.
struct Watch {
    last: (Duration, f64),
    fresh: Duration,
}

impl Watch {
    /// Whether the zone was fresh.
    fn step(&mut self, p: &mut PlatformOpened, watts: f64) -> bool {
        let now = sys::monotonic_now();
        let r = read(p, now);
        let (at, before) = self.last;
        let added = joules(&r) - before;
        assert!(added >= -1e-9, "energy never goes back");
        // Never more than the BMC's power over the interval: no catching up after a gap.
        assert!(
            added <= watts * (now - at).as_secs_f64() + 1e-6,
            "{added} J in {:?}",
            now - at
        );
        if r.stale.is_empty() {
            self.fresh += now - at;
        }
        self.last = (now, joules(&r));
        r.stale.is_empty()
    }
}

/// A BMC that stops answering for a while (staleness 400 ms, reads every 50 ms, an outage of
/// 3 s): the zone goes stale, no energy is counted for the gap, and none is made up after it.
#[test]
fn a_bmc_that_stops_answering_goes_stale_and_makes_no_spike() {
    let mut t = service(&[("1", OUR_UUID, &["1U"])]);
    with_supplies(&mut t, "1U", &["1"], &[("PSU1", 200.0, 180.0, "Enabled")]);
    let bmc = Bmc::new(t);
    let (addr, ca) = bmc.start();
    let sysfs = host(OUR_UUID);
    let o = RedfishOptions {
        timeout: Duration::from_millis(100),
        staleness: Some(Duration::from_millis(400)),
        ..opts(addr, &ca)
    };
    let mut p = open(&o, sysfs.root(), 1000.0).unwrap();
    assert!(p.answered);
    let start = sys::monotonic_now();
    let first = joules(&read(&mut p, start));
    let mut w = Watch {
        last: (start, first),
        fresh: Duration::ZERO,
    };
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(50));
        w.step(&mut p, 200.0);
    }
    assert!(
        w.fresh > Duration::ZERO && w.last.1 > first,
        "integrated while answering"
    );
    bmc.mode(Mode::Hang);
    let silent = Instant::now();
    eventually("stale", || !w.step(&mut p, 200.0));
    let frozen = w.last.1;
    while silent.elapsed() < Duration::from_secs(3) {
        assert!(!w.step(&mut p, 200.0), "stale until the BMC answers");
        assert_eq!(w.last.1, frozen, "nothing counted while stale");
        thread::sleep(Duration::from_millis(50));
    }
    bmc.mode(Mode::Normal);
    eventually("fresh again", || w.step(&mut p, 200.0));
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(50));
        w.step(&mut p, 200.0);
    }
    let total = w.last.1 - first;
    let elapsed = (w.last.0 - start).as_secs_f64();
    // At most the staleness bound of the 3 s outage was counted (the held last reading).
    assert!(
        total < 200.0 * (elapsed - 2.0),
        "{total} J over {elapsed} s: the outage was counted"
    );
}
