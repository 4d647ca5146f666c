//! Whole-server power from a BMC, end to end: the agent reads a simulated RAPL tree and a real
//! HTTPS Redfish service run by the test (a service tree in the shape of DMTF's schema: the
//! ServiceRoot, two systems of which ours has the host's SMBIOS UUID, its chassis'
//! PowerSubsystem with two supplies and their PowerSupplyMetrics; or only the older Power
//! resource), with basic authentication and the test CA's certificate. The BMC reports what a
//! server would draw from the wall for the simulated CPU load: 100 W of fans, disks and NICs,
//! plus the CPU zones' power with 25% of supply losses and the like on top.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    io::Write as _,
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{
    TestCgroup, agent_binary, free_port, http_get,
    pki::TestCa,
    pod_container,
    rapl_sim::{RaplSim, SimConfig},
    rel_diff, require_root, series, start_agent, wait_all, wait_for,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde_json::{Value, json};

fn workload() -> Command {
    integration_tests::workload!()
}

const OUR_UUID: &str = "4c4c4544-0037-3610-8048-b3c04f4b3732";
const OTHER_UUID: &str = "92384634-2938-2342-8820-489239905423";
const USER: (&str, &str) = ("admin", "s3cret");
const ID: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";
const UID: &str = "0a0b0c0d-1111-2222-3333-444455556666";

/// Fans, disks and NICs, whatever the load.
const REST_WATTS: f64 = 100.0;
/// The wall's power per watt of CPU zones (supply losses, VRs, cooling that follows load).
const WALL_PER_CPU_WATT: f64 = 1.25;

/// Where the BMC reads its power.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// `PowerSubsystem/PowerSupplies/{id}/Metrics` → `InputPowerWatts`, two supplies.
    Subsystem,
    /// Only the older `Power` resource: `PowerControl[]` and supplies reporting output only.
    Legacy,
}

/// The BMC: its tree, what it served, and whether it answers.
struct Bmc {
    shape: Shape,
    sim: Arc<RaplSim>,
    tree: BTreeMap<String, Value>,
    silent: AtomicBool,
    /// The platform figures it served, in order.
    served: Mutex<Vec<f64>>,
}

impl Bmc {
    fn new(shape: Shape, sim: Arc<RaplSim>) -> Arc<Self> {
        Arc::new(Self {
            shape,
            sim,
            tree: tree(shape),
            silent: AtomicBool::new(false),
            served: Mutex::new(Vec::new()),
        })
    }

    /// What the server draws now: the rest, and the CPU zones' power (the simulated package
    /// over the last second, and its dram) with their share of losses.
    fn watts(&self) -> f64 {
        let now = unix_now();
        let package = self.sim.package_joules_at(now).unwrap_or(0.0)
            - self.sim.package_joules_at(now - 1.0).unwrap_or(0.0);
        let c = self.sim.config();
        let dram = c.dram_watts_per_socket * f64::from(c.sockets);
        REST_WATTS + WALL_PER_CPU_WATT * (package + dram)
    }

    /// The document at `path`, the power figures filled in now.
    fn doc(&self, path: &str) -> Option<Value> {
        let live = path.ends_with("/Metrics") || path.ends_with("/Power");
        if !live {
            return self.tree.get(path).cloned();
        }
        let w = self.watts();
        self.served.lock().unwrap().push(w);
        match self.shape {
            // Two supplies sharing the load evenly: each reports half.
            Shape::Subsystem => Some(supply_metrics(w / 2.0)),
            Shape::Legacy => Some(legacy_power(path, w)),
        }
    }

    /// The lowest and highest figures served since the `from`-th.
    fn served_range(&self, from: usize) -> (f64, f64) {
        let s = self.served.lock().unwrap();
        let tail = &s[from.min(s.len())..];
        let lo = tail.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = tail.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }

    fn served_count(&self) -> usize {
        self.served.lock().unwrap().len()
    }

    /// Serves HTTPS on 127.0.0.1 with the CA's server certificate; returns the address.
    fn serve(self: &Arc<Self>, ca: &TestCa) -> Result<String> {
        let issued = ca.server("bmc")?;
        let certs = CertificateDer::pem_file_iter(&issued.cert)?.collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&issued.key)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let bmc = self.clone();
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (bmc, config) = (bmc.clone(), config.clone());
                thread::spawn(move || bmc.answer(tcp, config));
            }
        });
        Ok(addr)
    }

    /// One request on one connection (closed after it).
    fn answer(&self, tcp: TcpStream, config: Arc<rustls::ServerConfig>) {
        let Ok(conn) = rustls::ServerConnection::new(config) else {
            return;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let Some((path, auth)) = read_request(&mut tls) else {
            return;
        };
        // A BMC that stopped answering: hold the request until it answers again.
        while self.silent.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(50));
        }
        let expected = format!("Basic {}", base64_encode(&format!("{}:{}", USER.0, USER.1)));
        let (status, body) = if auth.as_deref() != Some(expected.as_str()) {
            ("401 Unauthorized", String::new())
        } else {
            match self.doc(path.trim_end_matches('/')) {
                Some(d) => ("200 OK", d.to_string()),
                None => ("404 Not Found", String::new()),
            }
        };
        let _ = write!(
            tls,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             WWW-Authenticate: Basic realm=\"BMC\"\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tls.flush();
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
}

/// The request line's path and the Authorization header, once the head has arrived.
fn read_request(s: &mut impl std::io::Read) -> Option<(String, Option<String>)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).ok().filter(|n| *n > 0)?;
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let auth = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    Some((path, auth))
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
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

/// The service: our system (the host's UUID) in chassis `1U`, another in chassis `2U`.
fn tree(shape: Shape) -> BTreeMap<String, Value> {
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
    t.insert(
        "/redfish/v1/Systems".into(),
        collection(&[
            "/redfish/v1/Systems/437XR1138R2",
            "/redfish/v1/Systems/other",
        ]),
    );
    for (id, uuid, chassis) in [("437XR1138R2", OUR_UUID, "1U"), ("other", OTHER_UUID, "2U")] {
        let path = format!("/redfish/v1/Systems/{id}");
        t.insert(
            path.clone(),
            json!({
                "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
                "@odata.id": path,
                "Id": id,
                "UUID": uuid,
                "PowerState": "On",
                "Links": { "Chassis": [link(&format!("/redfish/v1/Chassis/{chassis}"))] },
            }),
        );
        match shape {
            Shape::Subsystem => subsystem(&mut t, chassis, id),
            Shape::Legacy => legacy(&mut t, chassis, id),
        }
    }
    t
}

/// A chassis with a PowerSubsystem and two supplies, each with its PowerSupplyMetrics.
fn subsystem(t: &mut BTreeMap<String, Value>, chassis: &str, system: &str) {
    let base = format!("/redfish/v1/Chassis/{chassis}");
    t.insert(
        base.clone(),
        json!({
            "@odata.type": "#Chassis.v1_23_0.Chassis",
            "@odata.id": base,
            "Id": chassis,
            "ChassisType": "RackMount",
            "PowerSubsystem": link(&format!("{base}/PowerSubsystem")),
            "Links": { "ComputerSystems": [link(&format!("/redfish/v1/Systems/{system}"))] },
        }),
    );
    let supplies = format!("{base}/PowerSubsystem/PowerSupplies");
    t.insert(
        format!("{base}/PowerSubsystem"),
        json!({
            "@odata.type": "#PowerSubsystem.v1_1_0.PowerSubsystem",
            "Id": "PowerSubsystem",
            "CapacityWatts": 1600,
            "PowerSupplies": link(&supplies),
        }),
    );
    let bays = [format!("{supplies}/Bay1"), format!("{supplies}/Bay2")];
    t.insert(supplies.clone(), collection(&[&bays[0], &bays[1]]));
    for (i, bay) in bays.iter().enumerate() {
        t.insert(
            bay.clone(),
            json!({
                "@odata.type": "#PowerSupply.v1_5_0.PowerSupply",
                "Id": format!("Bay{}", i + 1),
                "Status": { "State": "Enabled", "Health": "OK" },
                "PowerCapacityWatts": 800,
                "Metrics": link(&format!("{bay}/Metrics")),
            }),
        );
    }
}

fn supply_metrics(input: f64) -> Value {
    json!({
        "@odata.type": "#PowerSupplyMetrics.v1_0_1.PowerSupplyMetrics",
        "Id": "Metrics",
        "InputVoltage": { "Reading": 230.0 },
        "InputPowerWatts": { "Reading": input },
        // Output power leaves out the supply's losses: never the platform figure.
        "OutputPowerWatts": { "Reading": input * 0.92 },
    })
}

/// A chassis with only the older Power resource (its document is made at each request).
fn legacy(t: &mut BTreeMap<String, Value>, chassis: &str, system: &str) {
    let base = format!("/redfish/v1/Chassis/{chassis}");
    t.insert(
        base.clone(),
        json!({
            "@odata.type": "#Chassis.v1_14_0.Chassis",
            "@odata.id": base,
            "Id": chassis,
            "Power": link(&format!("{base}/Power")),
            "Links": { "ComputerSystems": [link(&format!("/redfish/v1/Systems/{system}"))] },
        }),
    );
}

/// The Power resource at `path` (`/redfish/v1/Chassis/<id>/Power`): one PowerControl entry for
/// the chassis' system, and supplies that report output power only.
fn legacy_power(path: &str, watts: f64) -> Value {
    let system = if path.contains("/1U/") {
        "437XR1138R2"
    } else {
        "other"
    };
    json!({
        "@odata.type": "#Power.v1_7_1.Power",
        "Id": "Power",
        "PowerControl": [{
            "@odata.id": format!("{path}#/PowerControl/0"),
            "MemberId": "PC1",
            "Name": "Server Power Control",
            "PowerConsumedWatts": watts,
            "RelatedItem": [link(&format!("/redfish/v1/Systems/{system}"))],
        }],
        "PowerSupplies": [{
            "MemberId": "0",
            "Name": "Power Supply Bay 1",
            "PowerOutputWatts": watts * 0.92,
            "Status": { "State": "Enabled" },
        }],
    })
}

/// The simulated host: RAPL (its power following `cgroup`'s load) and the SMBIOS UUID.
fn host(cgroup: &TestCgroup) -> Result<Arc<RaplSim>> {
    let sim = RaplSim::start_for_cgroup(SimConfig::default(), &cgroup.path)?;
    let dmi = sim.sysfs_root().join("class/dmi/id");
    fs::create_dir_all(&dmi)?;
    fs::write(dmi.join("product_uuid"), format!("{OUR_UUID}\n"))?;
    // The BMC's figure is the package's power over the last second: let there be one.
    thread::sleep(Duration::from_millis(1200));
    Ok(Arc::new(sim))
}

/// The agent's (or `check`'s) flags for this host and BMC.
fn flags(sim: &RaplSim, bmc_addr: &str, ca: &TestCa) -> Result<Vec<std::ffi::OsString>> {
    let credentials: PathBuf = ca.dir.join("bmc-credentials");
    fs::write(&credentials, format!("{}:{}\n", USER.0, USER.1))?;
    let mut f: Vec<std::ffi::OsString> = Vec::new();
    let mut add = |k: &str, v: &OsStr| {
        f.push(k.into());
        f.push(v.to_owned());
    };
    add("--path.sysfs", sim.sysfs_root().as_os_str());
    add("--power-source", OsStr::new("powercap"));
    add(
        "--power.redfish.url",
        OsStr::new(&format!("https://{bmc_addr}")),
    );
    add("--power.redfish.credentials-file", credentials.as_os_str());
    add("--power.redfish.ca-file", ca.ca_file().as_os_str());
    add("--power.redfish.interval", OsStr::new("1s"));
    add("--power.redfish.timeout", OsStr::new("500ms"));
    add("--power.redfish.staleness", OsStr::new("3s"));
    Ok(f)
}

fn run_agent(flags: &[std::ffi::OsString]) -> Result<(integration_tests::Running, String)> {
    let port = free_port()?;
    let mut args: Vec<&OsStr> = flags.iter().map(|f| f.as_os_str()).collect();
    args.extend(["--metrics-compat", "kepler", "--interval", "500ms"].map(OsStr::new));
    let agent = start_agent(port, &args)?;
    Ok((agent, format!("127.0.0.1:{port}")))
}

fn check(flags: &[std::ffi::OsString]) -> Result<String> {
    let out = Command::new(agent_binary()?)
        .arg("check")
        .args(flags)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    if !out.status.success() {
        bail!("wattlet check failed:\n{text}");
    }
    Ok(text)
}

/// One scrape, parsed.
struct Scrape(String);

impl Scrape {
    fn take(addr: &str) -> Result<Self> {
        Ok(Self(http_get(addr, "/metrics", None)?.1))
    }

    /// The sum of `metric`'s series whose labels include every `(name, value)` of `want`.
    fn sum(&self, metric: &str, want: &[(&str, &str)]) -> f64 {
        series(&self.0, metric)
            .iter()
            .filter(|(l, _)| {
                want.iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn count(&self, metric: &str, want: &[(&str, &str)]) -> usize {
        series(&self.0, metric)
            .iter()
            .filter(|(l, _)| {
                want.iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .count()
    }

    /// The node's platform power (active + idle), if shown.
    fn platform_watts(&self) -> Option<f64> {
        let zone = [("zone", "platform")];
        (self.count("wattlet_node_power_watts", &zone) == 2)
            .then(|| self.sum("wattlet_node_power_watts", &zone))
    }

    fn platform_joules(&self) -> f64 {
        self.sum("wattlet_node_energy_joules_total", &[("zone", "platform")])
    }

    fn stale(&self) -> Option<bool> {
        series(&self.0, "wattlet_platform_stale")
            .first()
            .map(|(_, v)| *v == 1.0)
    }
}

/// The BMC's figure becomes the platform zone next to RAPL's: shown in watts as the BMC reports
/// it (and as Kepler's `kepler_platform_watts`), shared among workloads on top of their CPU
/// zones so that every joule of it is accounted for, stale (no power, no energy) while the BMC
/// does not answer, and without a spike when it answers again; `check` names the resource.
#[test]
fn redfish_platform_power_is_shared_on_top_of_the_cpu_zones_and_survives_an_outage() -> Result<()> {
    require_root();
    let base = TestCgroup::new("redfish")?;
    let sim = host(&base)?;
    let ca = TestCa::new("redfish")?;
    let bmc = Bmc::new(Shape::Subsystem, sim.clone());
    let bmc_addr = bmc.serve(&ca)?;
    let flags = flags(&sim, &bmc_addr, &ca)?;
    let (_agent, addr) = run_agent(&flags)?;

    // Quiet: the package at the law's idle, the BMC at 100 W + 1.25 × (40 + 3) W.
    thread::sleep(Duration::from_secs(3));
    let quiet_w = REST_WATTS + WALL_PER_CPU_WATT * 43.0;
    let s = Scrape::take(&addr)?;
    let shown = s.platform_watts().context("no platform power")?;
    let labels = [
        ("source", "redfish"),
        ("bmc_id", bmc_addr.as_str()),
        ("chassis_id", "1U"),
        ("power_control_id", ""),
    ];
    let kepler = s.sum("kepler_platform_watts", &labels);
    println!("quiet: platform {shown:.2} W, kepler_platform_watts {kepler:.2} W, BMC {quiet_w} W");
    assert!(
        rel_diff(shown, quiet_w) < 0.02,
        "{shown} W against {quiet_w} W"
    );
    assert_eq!(s.count("kepler_platform_watts", &labels), 1, "{}", s.0);
    assert!(rel_diff(kepler, quiet_w) < 0.02, "{kepler} W");
    assert_eq!(s.stale(), Some(false));

    let container = load_a_container(&base)?;
    let s = Scrape::take(&addr)?;
    every_platform_joule_is_accounted_for(&s)?;
    let zone_of = |zone: &str| {
        s.sum(
            "wattlet_container_energy_joules_total",
            &[("container_id", ID), ("zone", zone)],
        )
    };
    let (package, dram, platform) = (zone_of("package"), zone_of("dram"), zone_of("platform"));
    let pod = s.sum(
        "wattlet_pod_energy_joules_total",
        &[("pod_uid", UID), ("zone", "platform")],
    );
    println!(
        "container ({:.1} CPU-s): package {package:.2} J + dram {dram:.2} J, platform {platform:.2} J \
         (pod {pod:.2} J)",
        container.usage_ns()? as f64 / 1e9
    );
    assert!(package > 0.0, "the container ran: {}", s.0);
    assert!(
        platform > 1.02 * (package + dram),
        "its platform share {platform} J should exceed its CPU zones' {} J",
        package + dram
    );
    assert!(rel_diff(pod, platform) < 1e-9, "pod {pod} = its container");

    an_outage_is_stale_and_leaves_no_spike(&bmc, &addr)?;

    let text = check(&flags)?;
    assert!(
        text.contains(&format!(
            "[use ] redfish   platform zone: https://{bmc_addr}/redfish/v1: system 437XR1138R2 \
             (its UUID is the host's SMBIOS UUID), chassis 1U: the input power of 2 power \
             supplies (PowerSubsystem/PowerSupplies, PowerSupplyMetrics InputPowerWatts)"
        )),
        "{text}"
    );
    Ok(())
}

/// Runs a CPU load in a pod's container, then a quiet spell; returns the container.
fn load_a_container(base: &TestCgroup) -> Result<TestCgroup> {
    let c = pod_container(base, "besteffort", UID, ID)?;
    wait_all(vec![c.spawn(workload().args(["spin", "4"]))?])?;
    thread::sleep(Duration::from_secs(2));
    Ok(c)
}

/// In one scrape: containers + cgroups + VMs + expired + the node's idle (what it kept, under
/// the default idle policy) = the node's platform energy; and the rest's split adds up.
fn every_platform_joule_is_accounted_for(s: &Scrape) -> Result<()> {
    let zone = [("zone", "platform")];
    let parts = [
        "wattlet_container_energy_joules_total",
        "wattlet_cgroup_energy_joules_total",
        "wattlet_vm_energy_joules_total",
        "wattlet_expired_energy_joules_total",
    ]
    .map(|m| s.sum(m, &zone));
    let idle = s.sum(
        "wattlet_node_energy_joules_total",
        &[("zone", "platform"), ("mode", "idle")],
    );
    let total = s.platform_joules();
    let sum = parts.iter().sum::<f64>() + idle;
    let cpu = s.sum("wattlet_node_energy_joules_total", &[("zone", "package")])
        + s.sum("wattlet_node_energy_joules_total", &[("zone", "dram")]);
    let rest = s.sum("wattlet_platform_rest_joules_total", &[]);
    let excess = s.sum("wattlet_platform_cpu_excess_joules_total", &[]);
    println!(
        "platform {total:.3} J: workloads + expired + idle {sum:.3} J; package + dram {cpu:.3} J, \
         rest {rest:.3} J, CPU zones above the BMC {excess:.3} J"
    );
    assert!(total > 0.0, "{}", s.0);
    assert!(rel_diff(sum, total) < 1e-9, "{parts:?} + {idle} vs {total}");
    // The platform holds the CPU zones measured beside it (minus what the BMC missed of them,
    // and the intervals before it answered or while stale), and the rest.
    assert!(rest > 0.0 && rest < total, "rest {rest} of {total}");
    Ok(())
}

/// The BMC stops answering for longer than the staleness bound: the platform zone shows no
/// power (`wattlet_platform_stale` 1, no `wattlet_node_power_watts{zone="platform"}`, no
/// `kepler_platform_watts` series) and its joules stand still; when the BMC answers again the
/// power is back at the BMC's figure, and nothing is made up for the gap.
fn an_outage_is_stale_and_leaves_no_spike(bmc: &Bmc, addr: &str) -> Result<()> {
    bmc.silent.store(true, Ordering::Relaxed);
    let silenced = Instant::now();
    let stale = wait_for(
        "the platform zone to go stale",
        Duration::from_secs(10),
        || Scrape::take(addr).ok().filter(|s| s.stale() == Some(true)),
    )?;
    println!(
        "stale after {:.1} s of silence",
        silenced.elapsed().as_secs_f64()
    );
    assert_eq!(
        stale.platform_watts(),
        None,
        "no platform power while stale"
    );
    assert_eq!(stale.count("kepler_platform_watts", &[]), 0, "{}", stale.0);
    thread::sleep(Duration::from_secs(2));
    let frozen = Scrape::take(addr)?;
    assert_eq!(
        frozen.platform_joules(),
        stale.platform_joules(),
        "no energy while stale"
    );
    let gap = silenced.elapsed().as_secs_f64();

    let from = bmc.served_count();
    bmc.silent.store(false, Ordering::Relaxed);
    let back = wait_for("the BMC's power again", Duration::from_secs(20), || {
        Scrape::take(addr)
            .ok()
            .filter(|s| s.platform_watts().is_some())
    })?;
    let back_at = Instant::now();
    let mut highest = back.platform_watts().unwrap_or(0.0);
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(500));
        highest = highest.max(Scrape::take(addr)?.platform_watts().unwrap_or(0.0));
    }
    let last = Scrape::take(addr)?;
    let (lo, hi) = bmc.served_range(from);
    let gained = last.platform_joules() - frozen.platform_joules();
    let since_back = back_at.elapsed().as_secs_f64();
    println!(
        "silent {gap:.1} s; back: highest {highest:.2} W (BMC served {lo:.2}–{hi:.2} W), \
         {gained:.1} J gained in the {since_back:.1} s since"
    );
    assert!(
        highest <= hi * 1.02,
        "a spike: {highest} W above the BMC's {hi} W"
    );
    assert!(highest >= lo * 0.98, "{highest} W below the BMC's {lo} W");
    // At most the BMC's power since it answered again (and one interval before): nothing for
    // the gap, which would add ~gap × 150 W.
    assert!(
        gained <= hi * (since_back + 2.0),
        "{gained} J since the outage: energy was made up for the gap"
    );
    assert_eq!(last.stale(), Some(false));
    Ok(())
}

/// A BMC with only the older Power resource: the system's PowerControl entry, labelled as
/// Kepler labels it.
#[test]
fn redfish_older_power_resource_gives_the_platform_and_keplers_labels() -> Result<()> {
    require_root();
    let base = TestCgroup::new("redfish-legacy")?;
    let sim = host(&base)?;
    let ca = TestCa::new("redfish-legacy")?;
    let bmc = Bmc::new(Shape::Legacy, sim.clone());
    let bmc_addr = bmc.serve(&ca)?;
    let flags = flags(&sim, &bmc_addr, &ca)?;
    let text = check(&flags)?;
    assert!(
        text.contains(
            "chassis 1U: the system's consumed power (Power, PowerControl[0] \"Server Power \
             Control\" PowerConsumedWatts)"
        ),
        "{text}"
    );
    let (_agent, addr) = run_agent(&flags)?;
    let want = REST_WATTS + WALL_PER_CPU_WATT * 43.0;
    let labels = [
        ("source", "redfish"),
        ("node_name", "e2e-node"),
        ("bmc_id", bmc_addr.as_str()),
        ("chassis_id", "1U"),
        ("power_control_id", "PC1"),
        ("power_control_name", "Server Power Control"),
    ];
    let s = wait_for("kepler_platform_watts", Duration::from_secs(10), || {
        Scrape::take(&addr)
            .ok()
            .filter(|s| s.count("kepler_platform_watts", &labels) == 1)
    })?;
    let kepler = s.sum("kepler_platform_watts", &labels);
    println!("older Power resource: kepler_platform_watts {kepler:.2} W, BMC {want} W");
    assert!(rel_diff(kepler, want) < 0.02, "{kepler} W against {want} W");
    Ok(())
}
