//! hwmon against fixture trees laid out as the kernel lays them out, one per chip family.

use super::*;
use crate::power::fixture::{Tree, at, zones};

/// Writes `hwmon/<dir>/name` and each `(attribute, value)` under it.
fn chip(t: &Tree, dir: &str, name: &str, attrs: &[(&str, &str)]) {
    t.file(&format!("class/hwmon/{dir}/name"), name);
    for (a, v) in attrs {
        t.file(&format!("class/hwmon/{dir}/{a}"), v);
    }
}

fn set(t: &Tree, dir: &str, attrs: &[(&str, &str)]) {
    for (a, v) in attrs {
        t.file(&format!("class/hwmon/{dir}/{a}"), v);
    }
}

fn rules() -> ChipRules {
    ChipRules::new(None)
}

/// What `wattlet check` would list for `hwmon`, as `channel: outcome`.
fn listed(t: &Tree, hwmon: &str) -> Vec<String> {
    let chips = survey(t.root(), &rules()).unwrap();
    let c = chips.iter().find(|c| c.hwmon == hwmon).unwrap();
    c.channels
        .iter()
        .map(|d| {
            let what = match &d.what {
                Use::Energy { zone } => format!("energy → {zone}"),
                Use::Power { zone, .. } => format!("power → {zone}"),
                Use::Voltage {
                    current, zone, by, ..
                } => format!("× curr{current} → {zone} ({by})"),
                Use::Current { voltage } => format!("× in{voltage}"),
                Use::Skipped(s) => format!("skipped: {s}"),
            };
            format!("{}: {what}", d.channel)
        })
        .collect()
}

fn close(got: &[(&str, f64)], want: &[(&str, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((gz, gj), (wz, wj)) in got.iter().zip(want) {
        assert_eq!(gz, wz);
        assert!((gj - wj).abs() < 1e-9, "{gz}: {gj} J, want {wj} J");
    }
}

#[test]
fn amd_energy_counters() {
    let t = Tree::new();
    let d = "hwmon2";
    chip(
        &t,
        d,
        "amd_energy",
        &[
            ("energy1_label", "Ecore000"),
            ("energy1_input", "1000000"),
            ("energy2_label", "Ecore001"),
            ("energy2_input", "2000000"),
            ("energy3_label", "Esocket0"),
            ("energy3_input", "9000000"),
        ],
    );
    // A temperature-only chip is ignored.
    chip(&t, "hwmon0", "k10temp", &[("temp1_input", "40000")]);
    let o = open(t.root(), 1000.0, &rules()).unwrap();
    assert_eq!(
        o.description,
        "3 energy counter(s) and 0 power sensor(s) on hwmon2 (amd_energy), zones core, package"
    );
    let mut h = o.source;
    h.read(&at(0.0));
    set(
        &t,
        d,
        &[
            ("energy1_input", "4000000"),
            ("energy2_input", "3000000"),
            ("energy3_input", "21000000"),
        ],
    );
    assert_eq!(zones(&h.read(&at(1.0))), [("core", 4.0), ("package", 12.0)]);
}

#[test]
fn power_only_sensor_is_integrated_over_time() {
    let t = Tree::new();
    let d = "hwmon1";
    chip(
        &t,
        d,
        "ina3221",
        &[
            ("power1_label", "VDD_IN"),
            ("power1_input", "5000000"),
            ("power1_average", "4000000"),
        ],
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    assert_eq!(zones(&h.read(&at(0.0))), [("vdd_in", 0.0)]);
    set(&t, d, &[("power1_input", "7000000")]);
    // (5 W + 7 W) / 2 × 2 s = 12 J: _input is used, not _average.
    assert_eq!(zones(&h.read(&at(2.0))), [("vdd_in", 12.0)]);
    assert_eq!(zones(&h.read(&at(2.5))), [("vdd_in", 15.5)]);
}

#[test]
fn acpi_power_meter_under_device() {
    let t = Tree::new();
    chip(
        &t,
        "hwmon3",
        "power_meter",
        &[("device/power1_average", "250000000")],
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    assert_eq!(zones(&h.read(&at(1.0))), [("platform", 250.0)]);
}

/// A Jetson's INA3221: three rails (labels on the bus voltages), shunt voltages in µV and
/// their sum, a current sum, and a third channel the device tree left disabled.
#[test]
fn ina3221_three_rails_and_the_skipped_channels() {
    let t = Tree::new();
    let d = "hwmon1";
    chip(
        &t,
        d,
        "ina3221",
        &[
            ("in1_label", "VDD_IN"),
            ("in1_enable", "1"),
            ("in1_input", "5000"),
            ("in2_label", "VDD_CPU_GPU_CV"),
            ("in2_enable", "1"),
            ("in2_input", "4800"),
            ("in3_label", "VDD_SOC"),
            ("in3_enable", "0"),
            ("in3_input", "0"),
            ("in4_input", "12000"),
            ("in5_input", "6000"),
            ("in6_input", "0"),
            ("in7_label", "sum of shunt voltages"),
            ("in7_input", "18000"),
            ("curr1_input", "1200"),
            ("curr1_crit", "5000"),
            ("curr2_input", "500"),
            ("curr3_input", "0"),
            ("curr4_input", "1700"),
            ("shunt1_resistor", "5000"),
        ],
    );
    assert_eq!(
        listed(&t, d),
        [
            "in1: × curr1 → vdd_in (by the chip table)",
            "in2: × curr2 → vdd_cpu_gpu_cv (by the chip table)",
            "in3: skipped: disabled by the driver (_enable = 0)",
            "in4: skipped: a shunt voltage, not a supply (chip table)",
            "in5: skipped: a shunt voltage, not a supply (chip table)",
            "in6: skipped: a shunt voltage, not a supply (chip table)",
            "in7: skipped: no supply rail (chip table)",
            "curr1: × in1",
            "curr2: × in2",
            "curr3: skipped: nothing to pair it with",
            "curr4: skipped: no supply rail (chip table)",
        ]
    );
    let o = open(t.root(), 1000.0, &rules()).unwrap();
    assert_eq!(
        o.description,
        "0 energy counter(s), 0 power sensor(s) and 2 voltage × current pair(s) on hwmon1 \
         (ina3221), zones vdd_cpu_gpu_cv, vdd_in"
    );
    let mut h = o.source;
    h.read(&at(0.0));
    // 5 V × 1.2 A = 6 W and 4.8 V × 0.5 A = 2.4 W, then 5 V × 2 A = 10 W.
    close(
        &zones(&h.read(&at(1.0))),
        &[("vdd_cpu_gpu_cv", 2.4), ("vdd_in", 6.0)],
    );
    set(&t, d, &[("curr1_input", "2000")]);
    close(
        &zones(&h.read(&at(3.0))),
        &[("vdd_cpu_gpu_cv", 7.2), ("vdd_in", 22.0)],
    );
}

/// INA226 measures power itself: power1 is used, in1 × curr1 is the same channel.
#[test]
fn ina226_power_is_preferred_to_its_bus_voltage_times_current() {
    let t = Tree::new();
    let d = "hwmon5";
    chip(
        &t,
        d,
        "ina226",
        &[
            ("in0_input", "2"),
            ("in1_input", "12000"),
            ("curr1_input", "2500"),
            ("power1_input", "30000000"),
            ("shunt_resistor", "2000"),
            ("update_interval", "35"),
        ],
    );
    assert_eq!(
        listed(&t, d),
        [
            "power1: power → ina226_power1",
            "in0: skipped: a shunt voltage, not a supply (chip table)",
            "in1: skipped: the chip measures it as power1",
            "curr1: skipped: the chip measures it as power1",
        ]
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    assert_eq!(zones(&h.read(&at(2.0))), [("ina226_power1", 60.0)]);
}

/// INA226 on a driver without power1: the bus voltage (in1), not the shunt (in0), times curr1.
#[test]
fn ina226_without_power_pairs_the_bus_voltage() {
    let t = Tree::new();
    chip(
        &t,
        "hwmon5",
        "ina226",
        &[
            ("in0_input", "2"),
            ("in1_input", "12000"),
            ("curr1_input", "2500"),
        ],
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    assert_eq!(zones(&h.read(&at(2.0))), [("ina226_power1", 60.0)]);
}

/// MAX20730 (PMBus): curr1 is the output current, paired with the output voltage in2.
#[test]
fn max20730_pairs_the_output_voltage_with_the_output_current() {
    let t = Tree::new();
    let d = "hwmon7";
    chip(
        &t,
        d,
        "max20730",
        &[
            ("in1_label", "vin"),
            ("in1_input", "12000"),
            ("in2_label", "vout1"),
            ("in2_input", "900"),
            ("curr1_label", "iout1"),
            ("curr1_input", "20000"),
            ("temp1_input", "50000"),
        ],
    );
    assert_eq!(
        listed(&t, d),
        [
            "in1: skipped: nothing to pair it with",
            "in2: × curr1 → pout1 (by label)",
            "curr1: × in2",
        ]
    );
    // Without labels (an old kernel), the chip table gives the same pair.
    t.remove(&format!("class/hwmon/{d}/in1_label"));
    t.remove(&format!("class/hwmon/{d}/in2_label"));
    t.remove(&format!("class/hwmon/{d}/curr1_label"));
    assert_eq!(
        listed(&t, d)[1],
        "in2: × curr1 → max20730_power1 (by the chip table)"
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    // 0.9 V × 20 A = 18 W, not 12 V × 20 A.
    close(&zones(&h.read(&at(10.0))), &[("max20730_power1", 180.0)]);
}

/// A multi-phase PMBus regulator: input power measured by the chip, output power from
/// vout × iout per page, the phases of iout1 left alone.
#[test]
fn pmbus_regulator_pages_and_phases() {
    let t = Tree::new();
    let d = "hwmon9";
    chip(
        &t,
        d,
        "pmbus",
        &[
            ("in1_label", "vin"),
            ("in1_input", "12000"),
            ("in2_label", "vout1"),
            ("in2_input", "1800"),
            ("in3_label", "vout2"),
            ("in3_input", "1100"),
            ("curr1_label", "iin"),
            ("curr1_input", "3000"),
            ("curr2_label", "iout1"),
            ("curr2_input", "10000"),
            ("curr3_label", "iout2"),
            ("curr3_input", "5000"),
            ("curr4_label", "iout1.0"),
            ("curr4_input", "5000"),
            ("curr5_label", "iout1.1"),
            ("curr5_input", "5000"),
            ("power1_label", "pin"),
            ("power1_input", "36000000"),
        ],
    );
    assert_eq!(
        listed(&t, d),
        [
            "power1: power → pin",
            "in1: skipped: the chip measures it as power1",
            "in2: × curr2 → pout1 (by label)",
            "in3: × curr3 → pout2 (by label)",
            "curr1: skipped: the chip measures it as power1",
            "curr2: × in2",
            "curr3: × in3",
            "curr4: skipped: one phase of a regulator's output current",
            "curr5: skipped: one phase of a regulator's output current",
        ]
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    close(
        &zones(&h.read(&at(1.0))),
        &[("pin", 36.0), ("pout1", 18.0), ("pout2", 5.5)],
    );
}

/// A monitor with an energy counter, a power sensor and a bus voltage × current for one
/// channel: energy is used, the rest is the same channel.
#[test]
fn energy_power_and_product_at_once_prefer_energy() {
    let t = Tree::new();
    let d = "hwmon2";
    chip(
        &t,
        d,
        "sq52206",
        &[
            ("in0_input", "1"),
            ("in1_input", "12000"),
            ("curr1_input", "1000"),
            ("power1_input", "12000000"),
            ("energy1_input", "5000000"),
        ],
    );
    assert_eq!(
        listed(&t, d),
        [
            "energy1: energy → sq52206_energy1",
            "power1: skipped: the chip measures it as energy1",
            "in0: skipped: a shunt voltage, not a supply (chip table)",
            "in1: skipped: the chip measures it as energy1",
            "curr1: skipped: the chip measures it as energy1",
        ]
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    // The counter's 7 J, whatever the power sensor says.
    set(
        &t,
        d,
        &[("energy1_input", "12000000"), ("power1_input", "99000000")],
    );
    assert_eq!(zones(&h.read(&at(1.0))), [("sq52206_energy1", 7.0)]);
}

/// Channels the driver disabled are not counted, whatever they read.
#[test]
fn disabled_channels_are_skipped() {
    let t = Tree::new();
    let d = "hwmon4";
    chip(
        &t,
        d,
        "ltc4282",
        &[
            // VSOURCE monitoring off, so VDD (in1) is the supply.
            ("in0_label", "VSOURCE"),
            ("in0_enable", "0"),
            ("in0_input", "11900"),
            ("in1_label", "VDD"),
            ("in1_enable", "1"),
            ("in1_input", "12000"),
            ("in2_label", "VGPIO"),
            ("in2_input", "1000"),
            ("curr1_label", "ISENSE"),
            ("curr1_input", "10000"),
            ("energy1_enable", "0"),
            ("energy1_input", "999000000"),
        ],
    );
    chip(
        &t,
        "hwmon6",
        "acme",
        &[
            ("power1_enable", "0"),
            ("power1_input", "500000000"),
            ("power2_input", "3000000"),
        ],
    );
    assert_eq!(
        listed(&t, "hwmon4"),
        [
            "energy1: skipped: disabled by the driver (_enable = 0)",
            "in0: skipped: disabled by the driver (_enable = 0)",
            "in1: × curr1 → vdd (by the chip table)",
            "in2: skipped: no supply rail (chip table)",
            "curr1: × in1",
        ]
    );
    assert_eq!(
        listed(&t, "hwmon6"),
        [
            "power1: skipped: disabled by the driver (_enable = 0)",
            "power2: power → acme_power2",
        ]
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    set(&t, d, &[("energy1_input", "1999000000")]);
    close(
        &zones(&h.read(&at(2.0))),
        &[("acme_power2", 6.0), ("vdd", 240.0)],
    );
}

/// A chip no table knows: matching labels first, then the same index.
#[test]
fn unknown_chip_by_label_then_by_index() {
    let t = Tree::new();
    let d = "hwmon8";
    chip(
        &t,
        d,
        "brandnew",
        &[
            ("in1_label", "P12V"),
            ("in1_input", "12000"),
            ("in2_label", "P5V"),
            ("in2_input", "5000"),
            ("in3_input", "3300"),
            ("curr1_label", "P5V"),
            ("curr1_input", "1000"),
            ("curr2_label", "P12V"),
            ("curr2_input", "2000"),
            ("curr3_input", "500"),
        ],
    );
    assert_eq!(
        listed(&t, d),
        [
            "in1: × curr2 → p12v (by label)",
            "in2: × curr1 → p5v (by label)",
            "in3: × curr3 → brandnew_power3 (by index)",
            "curr1: × in2",
            "curr2: × in1",
            "curr3: × in3",
        ]
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    close(
        &zones(&h.read(&at(4.0))),
        &[("brandnew_power3", 6.6), ("p12v", 96.0), ("p5v", 20.0)],
    );
}

/// A file of extra rules pairs a chip the built-in table does not know.
#[test]
fn a_chip_file_rule_is_used() {
    let t = Tree::new();
    chip(
        &t,
        "hwmon1",
        "brandnew",
        &[
            ("in1_input", "12000"),
            ("in2_input", "1000"),
            ("curr1_input", "3000"),
        ],
    );
    let file = ChipFile {
        path: "/etc/chips".into(),
        rules: std::sync::Arc::new(chips::parse("brandnew pair=2:1 skip-in=1", "f").unwrap()),
    };
    let rules = ChipRules::new(Some(&file));
    let s = survey(t.root(), &rules).unwrap();
    assert_eq!(s[0].rule.as_deref(), Some("/etc/chips"));
    let mut h = open(t.root(), 1000.0, &rules).unwrap().source;
    h.read(&at(0.0));
    close(&zones(&h.read(&at(1.0))), &[("brandnew_power1", 3.0)]);
}

/// A super-I/O chip with voltages only: no zone, and the error says why.
#[test]
fn voltages_only_say_so() {
    let t = Tree::new();
    chip(
        &t,
        "hwmon2",
        "nct6775",
        &[
            ("in0_input", "1040"),
            ("in1_input", "1856"),
            ("in2_input", "3344"),
            ("fan1_input", "900"),
        ],
    );
    let e = open(t.root(), 1000.0, &rules()).err().unwrap().to_string();
    assert!(
        e.contains("no energy or power sensors among 1 hwmon chip(s)")
            && e.contains("3 voltage channel(s) give no power without a current"),
        "{e}"
    );
    assert_eq!(
        listed(&t, "hwmon2")[0],
        "in0: skipped: the chip reports no current: a voltage alone gives no power"
    );
    chip(
        &t,
        "hwmon3",
        "mystery",
        &[
            ("in1_label", "A"),
            ("in1_input", "1"),
            ("curr1_label", "B"),
            ("curr1_input", "1"),
        ],
    );
    let e = open(t.root(), 1000.0, &rules()).err().unwrap().to_string();
    assert!(
        e.contains("none of the 4 voltage and 1 current channel(s) could be paired into power"),
        "{e}"
    );
}

#[test]
fn no_sensors_and_bad_values() {
    let t = Tree::new();
    let e = open(t.root(), 1000.0, &rules()).err().unwrap().to_string();
    assert!(e.contains("class/hwmon does not exist"), "{e}");
    chip(&t, "hwmon0", "k10temp", &[("temp1_input", "40000")]);
    let e = open(t.root(), 1000.0, &rules()).err().unwrap().to_string();
    assert!(
        e.contains("no energy or power sensors among 1 hwmon chip(s)"),
        "{e}"
    );
    chip(&t, "hwmon1", "x", &[("energy1_input", "n/a")]);
    let e = open(t.root(), 1000.0, &rules()).err().unwrap().to_string();
    assert!(e.contains("\"n/a\" is not a non-negative integer"), "{e}");
    // An unreadable product is listed as such, on both channels.
    chip(
        &t,
        "hwmon2",
        "y",
        &[("in1_input", "12000"), ("curr1_input", "--")],
    );
    let listed = listed(&t, "hwmon2");
    assert!(
        listed[0].starts_with("in1: skipped: unreadable: "),
        "{listed:?}"
    );
    assert!(listed[1].contains("\"--\" is not an integer"), "{listed:?}");
}

#[test]
fn a_current_flowing_back_is_no_draw() {
    let t = Tree::new();
    let d = "hwmon1";
    chip(
        &t,
        d,
        "ina219",
        &[("in1_input", "5000"), ("curr1_input", "-1000")],
    );
    let mut h = open(t.root(), 1000.0, &rules()).unwrap().source;
    h.read(&at(0.0));
    let r = h.read(&at(1.0));
    assert_eq!(zones(&r), [("ina219_power1", 0.0)]);
    assert!(r.dropped.is_empty() && r.errors.is_empty());
}

#[test]
fn zone_names() {
    assert_eq!(
        zone_for("amd_energy", Some("Esocket1"), "energy", 9),
        "package"
    );
    assert_eq!(zone_for("mychip", None, "power", 2), "mychip_power2");
    assert_eq!(zone_for("ina3221", Some("VDD CPU"), "power", 1), "vdd_cpu");
}
