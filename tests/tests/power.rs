//! Node power end to end: the agent reading a simulated RAPL tree against the power law that
//! drives it, the power model on this sensorless machine, and how `wattlet check` chooses and
//! explains the power source.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use integration_tests::{
    agent_binary, free_port, http_get,
    rapl_sim::{RaplSim, SimConfig},
    rel_diff, require_root, sample, series, start_agent, wait_all,
};
use node_agent::power::model;

fn workload() -> Command {
    integration_tests::workload!()
}

const NODE: &str = "node=\"e2e-node\"";

/// One scrape: the power reading's time and every zone's joules (idle + active), from the same
/// snapshot.
fn reading(addr: &str, estimated: bool) -> Result<(f64, BTreeMap<String, f64>)> {
    let (_, body) = http_get(addr, "/metrics", None)?;
    let t = sample(
        &body,
        &format!("wattlet_power_reading_timestamp_seconds{{{NODE}}}"),
    )
    .context("no reading timestamp")?;
    let mut zones: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, v) in series(&body, "wattlet_node_energy_joules_total") {
        if labels["estimated"] == estimated.to_string() {
            *zones.entry(labels["zone"].clone()).or_default() += v;
        }
    }
    if zones.is_empty() {
        anyhow::bail!("no node energy with estimated=\"{estimated}\" in\n{body}");
    }
    Ok((t, zones))
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The acceptance test for measured power: the agent's node energy over a window, read from a
/// two-socket powercap tree whose counters wrap several times, matches the integral of the power
/// law (40 W + 60 W × busy fraction from /proc/stat) over the same window within 1%.
#[test]
fn simulated_rapl_energy_matches_the_power_law() -> Result<()> {
    require_root();
    let sim = RaplSim::start(SimConfig::default())?;
    let port = free_port()?;
    let _agent = start_agent(
        port,
        &[
            os("--path.sysfs"),
            sim.sysfs_root().as_os_str(),
            os("--power-source"),
            os("powercap"),
        ],
    )?;
    let addr = format!("127.0.0.1:{port}");
    thread::sleep(Duration::from_millis(600));
    let (t1, z1) = reading(&addr, false)?;

    thread::sleep(Duration::from_secs(2));
    wait_all(vec![workload().args(["spin", "3"]).spawn()?])?;
    thread::sleep(Duration::from_secs(1));

    let (t2, z2) = reading(&addr, false)?;
    let measured = z2["package"] - z1["package"];
    let law = sim.package_joules_at(t2).context("no history at t2")?
        - sim.package_joules_at(t1).context("no history at t1")?;
    let window = t2 - t1;
    let dram_w = (z2["dram"] - z1["dram"]) / window;
    let wraps = sim.wraps_between(t1, t2);
    let dram_expected = sim.config().dram_watts_per_socket * f64::from(sim.config().sockets);
    println!(
        "simulated RAPL, 2 sockets, {wraps} wraps in the window: agent {measured:.3} J against \
         the law's {law:.3} J over {window:.2} s ({:+.4}%), average {:.1} W; dram {dram_w:.3} W \
         against {dram_expected} W",
        (measured - law) / law * 100.0,
        law / window
    );
    assert!(wraps >= 2, "the window should cross wraps: {wraps}");
    assert!(
        rel_diff(measured, law) < 0.01,
        "agent {measured} J against the law's {law} J"
    );
    assert!(rel_diff(dram_w, dram_expected) < 0.02, "dram {dram_w} W");
    let (_, body) = http_get(&addr, "/metrics", None)?;
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("wattlet_power_readings_dropped_total{")),
        "no reading may be dropped across wraps:\n{body}"
    );
    assert!(
        body.contains(&format!(
            "wattlet_node_power_source_info{{{NODE},source=\"powercap\",estimated=\"false\",model=\"\"}} 1"
        )),
        "{body}"
    );
    Ok(())
}

/// On this machine (no sensor) the agent models power: labelled estimated, between the model's
/// idle and full-load figures, rising with load; memory power as the coefficients say.
#[test]
fn modelled_power_rises_with_load() -> Result<()> {
    require_root();
    let port = free_port()?;
    let _agent = start_agent(port, &[])?;
    let addr = format!("127.0.0.1:{port}");
    let (_, body) = http_get(&addr, "/metrics", None)?;
    let Some(family) = body
        .lines()
        .find(|l| l.starts_with("wattlet_node_power_source_info{"))
        .and_then(|l| l.split("model=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .filter(|_| body.contains("source=\"model\",estimated=\"true\""))
    else {
        println!("this machine has a power sensor: the model is tested on fixtures only");
        return Ok(());
    };
    let cpu = model::parse_cpuinfo(&fs::read_to_string("/proc/cpuinfo")?);
    let mem = model::mem_total_kib(&fs::read_to_string("/proc/meminfo")?).context("meminfo")?;
    let c = model::coefficients(&cpu, mem, &model::ModelOverrides::default())?;
    assert_eq!(c.family, family);
    let n = c.vcpus as f64;

    thread::sleep(Duration::from_millis(600));
    let (t1, z1) = reading(&addr, true)?;
    thread::sleep(Duration::from_millis(1500));
    let (t2, z2) = reading(&addr, true)?;
    let quiet_w = (z2["package"] - z1["package"]) / (t2 - t1);

    let spinners: Vec<_> = (0..c.vcpus)
        .map(|_| workload().args(["spin", "3"]).spawn())
        .collect::<Result<_, _>>()?;
    thread::sleep(Duration::from_millis(700));
    let (t3, z3) = reading(&addr, true)?;
    thread::sleep(Duration::from_millis(1800));
    let (t4, z4) = reading(&addr, true)?;
    wait_all(spinners)?;
    let loaded_w = (z4["package"] - z3["package"]) / (t4 - t3);
    let memory_w = (z2["dram"] - z1["dram"]) / (t2 - t1);
    let (idle_model, mem_model) = c.watts(0.0);
    let full_model = c.watts(1.0).0;
    println!(
        "modelled ({family}, {n} vCPUs): quiet {quiet_w:.2} W, all vCPUs busy {loaded_w:.2} W \
         (model {idle_model:.2}–{full_model:.2} W); memory {memory_w:.3} W (model {mem_model:.3} W)"
    );
    assert!(quiet_w >= idle_model * 0.99, "{quiet_w} below idle");
    assert!(loaded_w <= full_model * 1.01, "{loaded_w} above full load");
    assert!(
        loaded_w - quiet_w > 0.5 * (full_model - idle_model),
        "power must rise with load: {quiet_w} → {loaded_w}"
    );
    assert!(rel_diff(memory_w, mem_model) < 0.01, "{memory_w}");
    Ok(())
}

struct Fixture(PathBuf);

impl Fixture {
    fn new(name: &str) -> Result<Self> {
        let d = std::env::temp_dir().join(format!("wattlet-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d)?;
        Ok(Self(d))
    }
    fn file(&self, rel: &str, text: &str) -> Result<PathBuf> {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap())?;
        fs::write(&p, format!("{text}\n"))?;
        Ok(p)
    }
    fn rapl(&self, id: &str, name: &str) -> Result<PathBuf> {
        self.file(&format!("class/powercap/{id}/name"), name)?;
        self.file(
            &format!("class/powercap/{id}/max_energy_range_uj"),
            "262143328850",
        )?;
        self.file(&format!("class/powercap/{id}/energy_uj"), "1234")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn check(args: &[&OsStr]) -> Result<(bool, String)> {
    let out = Command::new(agent_binary()?)
        .arg("check")
        .args(args)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    Ok((out.status.success(), text))
}

#[test]
fn check_lists_every_source_and_explains_the_choice() -> Result<()> {
    require_root();
    // This machine: no sensor, so the model, said plainly.
    let (ok, text) = check(&[])?;
    assert!(ok, "{text}");
    if text.contains("[use ] model") {
        assert!(text.contains("[warn] power        power is modelled, not measured"));
        for kind in ["perf", "powercap", "hwmon"] {
            assert!(
                text.contains(&format!("[no  ] {kind:<9} ")),
                "{kind}: {text}"
            );
        }
    }

    // A two-socket powercap tree: measured power, and why it won.
    let f = Fixture::new("check-sysfs")?;
    for s in 0..2 {
        f.rapl(&format!("intel-rapl:{s}"), &format!("package-{s}"))?;
        f.rapl(&format!("intel-rapl:{s}:0"), "dram")?;
    }
    let (ok, text) = check(&[os("--path.sysfs"), f.0.as_os_str()])?;
    assert!(ok, "{text}");
    assert!(
        text.contains("[use ] powercap  4 RAPL counter(s) on 2 package(s), zones dram, package"),
        "{text}"
    );
    assert!(text.contains("[ok  ] model"), "{text}");
    assert!(
        text.contains("Choice: powercap is the first of --power.sources that works here (perf cannot be used)."),
        "{text}"
    );

    // The model's CPU comes from --path.procfs.
    let p = Fixture::new("check-procfs")?;
    let cpu = "vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n\
               model name\t: Intel(R) Xeon(R) Platinum 8259CL\nstepping\t: 7\n\n";
    p.file(
        "cpuinfo",
        &format!("processor\t: 0\n{cpu}processor\t: 1\n{cpu}"),
    )?;
    p.file("meminfo", "MemTotal:        8000000 kB")?;
    let (ok, text) = check(&[os("--path.procfs"), p.0.as_os_str()])?;
    assert!(ok, "{text}");
    assert!(
        text.contains("is cascade_lake; 0.64–3.97 W per vCPU × 2 vCPU(s)"),
        "{text}"
    );

    // A forced source that is not there: the agent cannot run, and says so.
    let (ok, text) = check(&[os("--power-source"), os("hwmon")])?;
    assert!(!ok);
    assert!(
        text.contains("[FAIL] power") && text.contains("hwmon was forced with --power-source"),
        "{text}"
    );
    Ok(())
}

/// energy_uj is root-only since CVE-2020-8694: without root, the reason and the alternatives.
#[test]
fn unreadable_energy_names_the_cve_and_the_alternatives() -> Result<()> {
    require_root();
    let f = Fixture::new("unreadable")?;
    let energy = f.rapl("intel-rapl:0", "package-0")?;
    fs::set_permissions(&energy, fs::Permissions::from_mode(0o400))?;
    for dir in [Path::new(&f.0)].into_iter().chain(
        energy
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(&f.0)),
    ) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(agent_binary()?)
        .args(["check", "--power-source", "powercap", "--path.sysfs"])
        .arg(&f.0)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let line = text
        .lines()
        .find(|l| l.contains("] powercap"))
        .context("no powercap line")?;
    assert!(line.contains("[no  ]"), "{line}");
    assert!(
        line.contains("intel-rapl:0/energy_uj is readable only by root since CVE-2020-8694")
            && line.contains("CAP_DAC_READ_SEARCH")
            && line.contains("--power-source perf"),
        "{line}"
    );
    Ok(())
}

/// hwmon chips that report only voltages and currents: `check` lists every channel, what was
/// made of it and why; a BMC that does not answer is a warning, not a failure.
#[test]
fn check_explains_hwmon_channels_and_the_platform_meter() -> Result<()> {
    require_root();
    let f = Fixture::new("check-hwmon")?;
    let ina = "class/hwmon/hwmon1";
    for (attr, value) in [
        ("name", "ina3221"),
        ("in1_label", "VDD_IN"),
        ("in1_input", "5000"),
        ("in2_label", "VDD_CPU_GPU_CV"),
        ("in2_input", "4800"),
        ("in3_enable", "0"),
        ("in3_input", "0"),
        ("in4_input", "1200"),
        ("in7_input", "1200"),
        ("curr1_input", "1200"),
        ("curr2_input", "500"),
        ("curr3_input", "0"),
    ] {
        f.file(&format!("{ina}/{attr}"), value)?;
    }
    f.file("class/hwmon/hwmon0/name", "nct6775")?;
    f.file("class/hwmon/hwmon0/in0_input", "1040")?;
    let (ok, text) = check(&[
        os("--path.sysfs"),
        f.0.as_os_str(),
        os("--power-source"),
        os("hwmon"),
        os("--power.redfish.url"),
        os("https://127.0.0.1:1"),
        os("--power.redfish.timeout"),
        os("300ms"),
    ])?;
    assert!(ok, "{text}");
    for line in [
        "[use ] hwmon     0 energy counter(s), 0 power sensor(s) and 2 voltage × current pair(s) on hwmon1 (ina3221), zones vdd_cpu_gpu_cv, vdd_in",
        "  hwmon0 nct6775\n    in0                  skipped: the chip reports no current: a voltage alone gives no power",
        "  hwmon1 ina3221 (pairing rule from the built-in chip table)",
        "    in1 \"VDD_IN\"         × curr1 (_input, paired by the chip table), integrated: zone vdd_in",
        "    in3                  skipped: disabled by the driver (_enable = 0)",
        "    in4                  skipped: a shunt voltage, not a supply (chip table)",
        "    in7                  skipped: no supply rail (chip table)",
        "    curr3                skipped: nothing to pair it with",
        "[warn] redfish   platform zone: https://127.0.0.1:1/redfish/v1: no reading yet (cannot reach",
        "[warn] platform",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }

    // Voltages alone: hwmon cannot be used, and says why.
    let v = Fixture::new("check-hwmon-volts")?;
    v.file("class/hwmon/hwmon0/name", "nct6775")?;
    for i in 0..3 {
        v.file(&format!("class/hwmon/hwmon0/in{i}_input"), "1040")?;
    }
    let (_, text) = check(&[os("--path.sysfs"), v.0.as_os_str()])?;
    assert!(
        text.contains("[no  ] hwmon     no energy or power sensors among 1 hwmon chip(s) under")
            && text.contains("and 3 voltage channel(s) give no power without a current"),
        "{text}"
    );
    Ok(())
}
